"""``serve``: start one server per checkpoint, write endpoints.json, block until Ctrl-C or SIGTERM, stop them all.

uv run serve --model DIR [--model DIR ...] [--port N] [--host 127.0.0.1] [--launcher auto|embedded]
             [--endpoints-out endpoints.json] [--name NAME ...] [--max-batch N] [--dtype DTYPE]
uv run serve ls                      # the containers comptrust started (docker launcher)
uv run serve stop NAME ... | --all   # stop and remove them
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from comptrust_core import ENDPOINTS_FILE, ConfigError, run_cli, setup_logging, write_endpoints

from comptrust_serve.checkpoint import Checkpoint, open_checkpoint
from comptrust_serve.launch import launch_checkpoint
from comptrust_serve.launchers import ServerHandle, launcher_names, resolve_launcher
from comptrust_serve.launchers.base import LaunchOptions
from comptrust_serve.ports import check_port_free

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

PROG = "serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve checkpoints over HTTP (TGI's API and OpenAI's), write endpoints.json, run until Ctrl-C.",
        epilog="`serve ls` lists the containers comptrust started; `serve stop NAME ... | --all` stops them.",
    )
    p.add_argument("--model", action="append", required=True, type=Path, metavar="DIR", help="checkpoint folder")
    p.add_argument("--name", action="append", help="endpoint name, once per --model (default: manifest or folder)")
    p.add_argument("--port", type=int, help="port of the first server, the next ones count up (default: free ports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--launcher", default="auto", choices=["auto", *launcher_names()], help="how to run the servers")
    p.add_argument("--endpoints-out", type=Path, default=Path(ENDPOINTS_FILE), help="where to write the endpoints")
    p.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together per server")
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="queued + running per server; then 429")
    p.add_argument("--max-total-tokens", type=int, help="prompt + generated tokens per request")
    p.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--api-key-env", metavar="VAR", help="require the bearer token held in environment variable VAR")
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own modeling code")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for health (default 600)")
    p.add_argument("--log-dir", type=Path, help="folder for the servers' logs (default: the temporary folder)")
    c = p.add_argument_group("containers (--launcher docker; `serve ls` and `serve stop` list and stop them)")
    c.add_argument("--image", help="container image (default: the engine's pinned TGI or vLLM image)")
    c.add_argument("--quantize", help="the engine's quantization (default: the manifest's hint; '' for none)")
    c.add_argument("--max-input-tokens", type=int, help="longest prompt in tokens (TGI)")
    c.add_argument("--num-shard", type=int, help="GPUs each model is split over (vLLM: tensor parallel size)")
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


def _ports(args: argparse.Namespace, count: int) -> list[int | None]:
    if args.port is None:
        return [None] * count
    ports = [args.port + i for i in range(count)]
    for port in ports:
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range 1-65535")
        check_port_free(args.host, port)
    return list(ports)


class _Stop:
    """Turns SIGINT and SIGTERM into an event while the servers run."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self.event.set()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait(handles: list[ServerHandle]) -> int:
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.event.wait(0.5):
            for handle in handles:
                if not handle.is_alive():
                    tail = "\n".join(f"  | {line}" for line in handle.log_tail().splitlines())
                    print(
                        f"{PROG}: error: {handle.endpoint.name} exited unexpectedly; its log:\n{tail}", file=sys.stderr
                    )
                    return 1
        logger.info("got %s; stopping", signal.Signals(stop.signal or signal.SIGTERM).name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _subcommand(name: str, argv: list[str]) -> int:
    from comptrust_serve.manage import ls_main, stop_main

    return {"ls": ls_main, "stop": stop_main}[name](argv)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("ls", "stop"):
        return _subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    checkpoints = _checkpoints(args)
    ports = _ports(args, len(checkpoints))
    launcher = resolve_launcher(args.launcher)
    if args.launcher == "auto":
        print(f"launcher: {launcher.name} (picked by --launcher auto)", flush=True)
    handles: list[ServerHandle] = []
    # SIGTERM while servers start tears down like Ctrl-C (a half-started server included), not by dying on the spot
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for checkpoint, port in zip(checkpoints, ports, strict=True):
            options = LaunchOptions(
                host=args.host,
                port=port,
                dtype=args.dtype,
                device=args.device,
                max_batch=args.max_batch,
                max_concurrent_requests=args.max_concurrent_requests,
                max_total_tokens=args.max_total_tokens,
                api_key_env=args.api_key_env,
                trust_remote_code=args.trust_remote_code,
                startup_timeout_s=args.startup_timeout,
                log_dir=args.log_dir,
                image=args.image,
                quantize=args.quantize,
                max_input_tokens=args.max_input_tokens,
                num_shard=args.num_shard,
                shm_size=args.shm_size,
            )
            handles.append(launch_checkpoint(checkpoint, launcher.name, options))
        write_endpoints(args.endpoints_out, [h.endpoint for h in handles])
        for handle in handles:
            print(f"{handle.endpoint.name}: {handle.endpoint.url}  (log: {handle.log_path})", flush=True)
        print(f"endpoints written to {args.endpoints_out}; Ctrl-C stops", flush=True)
        return _wait(handles)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        try:
            for handle in reversed(handles):
                handle.stop()
        finally:
            signal.signal(signal.SIGTERM, previous_term)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog=PROG)
