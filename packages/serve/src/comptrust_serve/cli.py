"""``serve``: start a server per checkpoint (placed on GPUs, started concurrently), write endpoints.json, block until
Ctrl-C or SIGTERM, stop them all. A checkpoint that fails to start is reported; the others keep serving.

uv run serve --model DIR [--model DIR ...] [--port N] [--host 127.0.0.1] [--launcher auto|docker|process|embedded]
             [--engine tgi|vllm] [--gpus 0,1,2,3] [--num-shard N] [--quantize Q] [--max-input-tokens N]
             [--endpoints-out endpoints.json] [--name NAME ...] [--max-batch N] [--dtype DTYPE]
uv run serve ls                      # the containers comptrust started (docker launcher)
uv run serve stop NAME ... | --all   # stop and remove them
uv run serve install-engine vllm     # a real vLLM in its own environment, for --launcher process --engine vllm
uv run serve cpu-dtype [--remeasure] # the dtype this CPU computes fast, and why (what --dtype auto picks)
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from comptrust_core import ENDPOINTS_FILE, ConfigError, run_cli, setup_logging, write_endpoints

from comptrust_serve.checkpoint import Checkpoint, open_checkpoint
from comptrust_serve.fleet import Fleet, launch_fleet
from comptrust_serve.launchers import ServerHandle, launcher_names, pick_auto, resolve_launcher
from comptrust_serve.launchers.base import LaunchOptions
from comptrust_serve.placement import check_gpus_exist, detect_gpus, parse_gpus

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

PROG = "serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve checkpoints over HTTP (TGI's API and OpenAI's), write endpoints.json, run until Ctrl-C.",
        epilog="`serve ls` lists the containers comptrust started; `serve stop NAME ... | --all` stops them; "
        "`serve install-engine vllm` installs a real vLLM (CPU or CUDA build, by what this machine has) in its own "
        "cached environment, where --launcher process --engine vllm finds it; `serve cpu-dtype` says which dtype this "
        "CPU computes fast (what --dtype auto picks).",
    )
    p.add_argument("--model", action="append", required=True, type=Path, metavar="DIR", help="checkpoint folder")
    p.add_argument("--name", action="append", help="endpoint name, once per --model (default: manifest or folder)")
    p.add_argument("--port", type=int, help="port of the first server, the next ones count up (default: free ports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--launcher",
        default="auto",
        choices=["auto", *launcher_names()],
        help="how to run the servers (auto: docker when a Docker engine and a GPU are there, else embedded)",
    )
    p.add_argument("--engine", choices=["tgi", "vllm"], default="tgi", help="inference engine of docker/process")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for the engine's command line (repeatable; --engine-arg=--flag for one that starts "
        "with a dash), e.g. --engine-arg=--enforce-eager",
    )
    p.add_argument(
        "--engine-command",
        metavar="CMD",
        help="the process launcher's engine program, replacing the one it finds: for vLLM, the installed engine "
        "(serve install-engine vllm) or $COMPTRUST_VLLM_PYTHON, else `vllm serve` from PATH; e.g. "
        "'/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server'",
    )
    p.add_argument("--gpus", type=parse_gpus, default=(), help="GPUs to place the servers on, e.g. 0,1,2,3 or 0-3")
    p.add_argument("--num-shard", type=int, help="GPUs per server (TGI --num-shard, vLLM --tensor-parallel-size)")
    p.add_argument("--quantize", help="engine's quantization (default: the manifest's hint; '' for none)")
    p.add_argument("--max-input-tokens", type=int, help="prompt tokens per request (docker/process engines)")
    p.add_argument("--endpoints-out", type=Path, default=Path(ENDPOINTS_FILE), help="where to write the endpoints")
    p.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together per server")
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="queued + running per server; then 429")
    p.add_argument("--max-total-tokens", type=int, help="prompt + generated tokens per request")
    p.add_argument(
        "--dtype",
        help="float32, bfloat16, float16 or auto: the checkpoint's own, on a CPU only where this CPU computes it fast "
        "(`serve cpu-dtype` says), else float32 (default: float32 on CPU, bfloat16 on GPU)",
    )
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--api-key-env", metavar="VAR", help="require the bearer token held in environment variable VAR")
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own modeling code")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for health (default 600)")
    p.add_argument("--log-dir", type=Path, help="folder for the servers' logs (default: the temporary folder)")
    c = p.add_argument_group("containers (--launcher docker; `serve ls` and `serve stop` list and stop them)")
    c.add_argument("--image", help="container image (default: the engine's pinned TGI or vLLM image)")
    c.add_argument("--shm-size", default="1g", help="the container's /dev/shm size (default 1g)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _checkpoints(args: argparse.Namespace) -> list[Checkpoint]:
    models: list[Path] = args.model
    names: list[str] | None = args.name
    if names is not None and len(names) != len(models):
        raise ConfigError(f"give --name once per --model ({len(models)} models, {len(names)} names), or not at all")
    checkpoints = [open_checkpoint(m, names[i] if names else None) for i, m in enumerate(models)]
    seen: set[str] = set()
    for checkpoint in checkpoints:
        if checkpoint.name in seen:
            raise ConfigError(
                f"two checkpoints would both be served as {checkpoint.name!r}; tell them apart with --name"
            )
        seen.add(checkpoint.name)
    return checkpoints


class _Stop:
    """Turns SIGINT and SIGTERM into an event while the servers run."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self.event.set()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
    raise KeyboardInterrupt


def _wait(handles: list[ServerHandle]) -> int:
    """Block until a signal (0) or until every server has died (1); a server that dies is reported at once."""
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    running, died = list(handles), 0
    try:
        while not stop.event.wait(0.5):
            for handle in [h for h in running if not h.is_alive()]:
                running.remove(handle)
                died += 1
                tail = "\n".join(f"  | {line}" for line in handle.log_tail().splitlines())
                print(f"{PROG}: error: {handle.endpoint.name} exited unexpectedly; its log:\n{tail}", file=sys.stderr)
            if not running:
                return 1
        logger.info("got %s; stopping", signal.Signals(stop.signal or signal.SIGTERM).name)
        return 1 if died else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _options(args: argparse.Namespace) -> LaunchOptions:
    return LaunchOptions(
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        device=args.device,
        max_batch=args.max_batch,
        max_concurrent_requests=args.max_concurrent_requests,
        max_total_tokens=args.max_total_tokens,
        api_key_env=args.api_key_env,
        trust_remote_code=args.trust_remote_code,
        startup_timeout_s=args.startup_timeout,
        log_dir=args.log_dir,
        engine=args.engine,
        gpus=args.gpus,
        num_shard=args.num_shard,
        quantize=args.quantize,
        max_input_tokens=args.max_input_tokens,
        image=args.image,
        shm_size=args.shm_size,
        extra_args=tuple(args.engine_arg),
        engine_command=tuple(shlex.split(args.engine_command)) if args.engine_command else None,
    )


def _install_engine(argv: list[str]) -> int:
    from comptrust_serve.engine_install import install_engine

    p = argparse.ArgumentParser(prog=f"{PROG} install-engine", description="Install a real inference engine.")
    p.add_argument("engine", choices=["vllm"])
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--cpu", dest="cpu", action="store_true", default=None, help="the CPU build (default: no GPU)")
    kind.add_argument("--cuda", dest="cpu", action="store_false", help="the CUDA build (default: a GPU is visible)")
    p.add_argument("--force", action="store_true", help="install again even if it is there")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    found = install_engine(args.engine, cpu=args.cpu, force=args.force)
    build = "CPU" if found.cpu else "CUDA"
    print(f"{found.package} {found.version} ({build} build) in {found.home}")
    print(f"its Python: {found.python}; `serve --launcher process --engine vllm` uses it")
    return 0


def _cpu_dtype(argv: list[str]) -> int:
    from comptrust_core import cache_dir
    from comptrust_core.cpu_dtype import FAST_RATIO, choose_cpu_dtype, cpu_profile

    p = argparse.ArgumentParser(
        prog=f"{PROG} cpu-dtype",
        description="Which dtype this CPU computes fast: what torch reports and what a short measurement gives, "
        "and what --dtype auto serves a bfloat16 or float16 checkpoint in here. Measured once per machine, cached.",
    )
    p.add_argument("--remeasure", action="store_true", help="measure again (e.g. on an idle machine)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    profile = cpu_profile(remeasure=args.remeasure)
    print(f"CPU: {profile.describe()}, {profile.threads} threads, torch {profile.torch_version}")
    print(f"measured {profile.measured_at} in {profile.measure_seconds:.1f} s (cached in {cache_dir()})")
    for dtype in ("bfloat16", "float16"):
        rows = ", ".join(f"{v:.2f}x at {r}" for r, v in profile.speed_by_rows.get(dtype, {}).items())
        hardware = {True: "yes", False: "no", None: "unknown"}[profile.hardware.get(dtype)]
        speed = profile.speed.get(dtype, 0.0)
        verdict = "fast" if profile.fast(dtype) else "slow"
        print(f"{dtype}: hardware {hardware}; {speed:.2f}x float32's speed ({rows} rows) -> {verdict}")
        auto = choose_cpu_dtype("auto", dtype, lambda: profile).dtype
        print(f"  --dtype auto serves a {dtype} checkpoint in {auto}")
    print(f"(a 16-bit dtype is fast with its hardware and at least {FAST_RATIO:.2f}x float32's measured speed)")
    return 0


def _subcommand(name: str, argv: list[str]) -> int:
    from comptrust_serve.manage import ls_main, stop_main

    commands = {"ls": ls_main, "stop": stop_main, "install-engine": _install_engine, "cpu-dtype": _cpu_dtype}
    return commands[name](argv)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("ls", "stop", "install-engine", "cpu-dtype"):
        return _subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    checkpoints = _checkpoints(args)
    if args.gpus:
        check_gpus_exist(args.gpus, detect_gpus())
    if args.launcher == "auto":
        launcher, skipped = pick_auto()
        why = "".join(f"; {reason}" for reason in skipped)
        print(f"launcher: {launcher.name} (picked by --launcher auto{why})", flush=True)
    else:
        launcher = resolve_launcher(args.launcher)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM while starting stops what has started
    try:
        fleet = launch_fleet(checkpoints, launcher, _options(args))
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        return _serve_fleet(fleet, args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        try:
            fleet.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _serve_fleet(fleet: Fleet, args: argparse.Namespace) -> int:
    for failure in fleet.failures:
        gpus = f" on GPU {','.join(map(str, failure.gpus))}" if failure.gpus else ""
        print(f"{PROG}: error: {failure.name}{gpus} failed to start: {failure.error}", file=sys.stderr, flush=True)
    if not fleet.handles:
        return 1
    write_endpoints(args.endpoints_out, fleet.endpoints)
    for handle in fleet.handles:
        print(f"{handle.endpoint.name}: {handle.endpoint.url}  (log: {handle.log_path})", flush=True)
    print(f"endpoints written to {args.endpoints_out}; Ctrl-C stops", flush=True)
    code = _wait(fleet.handles)
    return 1 if fleet.failures else code


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog=PROG)
