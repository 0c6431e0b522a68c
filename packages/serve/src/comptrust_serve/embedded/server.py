"""Running the embedded server: bind the port first (so a busy port fails fast), load the model, serve until a signal.

``python -m comptrust_serve.embedded --model DIR --host 127.0.0.1 --port N`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import io
import logging
import os
import select
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from comptrust_core import CheckpointError, ComptrustError, ConfigError, run_cli, setup_logging

from comptrust_serve.ports import bind_socket, url_for

__all__ = ["EmbeddedConfig", "build_parser", "main", "run_server"]

logger = logging.getLogger(__name__)

PROG = "python -m comptrust_serve.embedded"


@dataclass(frozen=True)
class EmbeddedConfig:
    """Everything the embedded server is started with. The API key itself is read from ``api_key_env`` at start."""

    model: Path
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    dtype: str | None = None
    device: str | None = None
    max_batch: int = 32
    max_concurrent_requests: int = 128
    max_prefill_tokens: int = 8192
    max_total_tokens: int | None = None
    max_new_tokens: int = 1024
    api_key_env: str | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    exit_with_parent: bool = False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve one checkpoint over TGI's and OpenAI's HTTP APIs.")
    p.add_argument("--model", required=True, type=Path, help="checkpoint folder (config.json, *.safetensors)")
    p.add_argument("--name", help="model name reported by /info and /v1/models (default: the folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind (default 8080; 0 picks a free one)")
    p.add_argument("--dtype", help="float32 (CPU default), bfloat16 (GPU default), float16, or auto (checkpoint's)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N, or auto")
    p.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together (default 32)")
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="queued + running; beyond: 429")
    p.add_argument("--max-prefill-tokens", type=int, default=8192, help="padded tokens prefilled in one group")
    p.add_argument("--max-total-tokens", type=int, help="prompt + generated tokens per request")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="default when a request sets none")
    p.add_argument(
        "--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on every route but /health"
    )
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own modeling code")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes or the parent dies")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _watch_parent() -> None:
    """Send ourselves SIGTERM when stdin reaches EOF (the launcher's pipe closed) or the parent process changes."""
    parent = os.getppid()
    fd = sys.stdin.fileno()

    def watch() -> None:
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready and not os.read(fd, 4096):
                break
            if os.getppid() != parent:
                break
        logger.warning("the launching process went away; shutting down")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_server(config: EmbeddedConfig) -> None:
    """Bind, load, serve; returns after SIGINT or SIGTERM once in-flight work has been failed or finished."""
    api_key: str | None = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env) or None
        if api_key is None:
            raise ConfigError(f"--api-key-env {config.api_key_env}: that environment variable is unset or empty")
    sock = bind_socket(config.host, config.port)
    sock.listen(1024)  # claim the port now; clients queue until the model is loaded and the app answers
    if config.exit_with_parent:
        _watch_parent()
    try:
        _serve(config, sock, api_key)
    finally:
        sock.close()


def _serve(config: EmbeddedConfig, sock: socket.socket, api_key: str | None) -> None:
    import torch
    from aiohttp import web

    from comptrust_serve import __version__
    from comptrust_serve.embedded.app import ServerSettings, create_app
    from comptrust_serve.embedded.codec import Codec
    from comptrust_serve.embedded.engine import Engine, EngineConfig
    from comptrust_serve.embedded.loader import load_model
    from comptrust_serve.embedded.types import Limits

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        engine_config = EngineConfig(config.max_batch, config.max_concurrent_requests, config.max_prefill_tokens)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        loaded = load_model(
            config.model, dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code
        )
    except ComptrustError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot load {config.model}: {type(exc).__name__}: {exc}") from exc
    total = config.max_total_tokens or min(loaded.max_positions or 4096, 4096)
    if total < 2:
        raise ConfigError(f"--max-total-tokens must be at least 2, not {total}")
    if loaded.max_positions is not None and total > loaded.max_positions:
        raise ConfigError(
            f"--max-total-tokens {total} exceeds the model's {loaded.max_positions} positions; pass at most that"
        )
    limits = Limits(max_input_tokens=total - 1, max_total_tokens=total, max_new_tokens=config.max_new_tokens)
    crashed = threading.Event()

    def on_crash(_: BaseException) -> None:
        crashed.set()
        os.kill(os.getpid(), signal.SIGTERM)

    # The worker decodes (for stop sequences) with its own tokenizer copy, never racing the event loop's.
    worker_codec = Codec(copy.deepcopy(loaded.tokenizer))
    engine = Engine(
        loaded.model,
        eos_ids=loaded.eos_ids,
        pad_id=loaded.pad_id,
        decode=worker_codec.decode,
        config=engine_config,
        on_crash=on_crash,
    )
    settings = ServerSettings(
        name=config.name or config.model.absolute().name,
        limits=limits,
        max_batch=config.max_batch,
        max_concurrent_requests=config.max_concurrent_requests,
        dtype=str(loaded.dtype).removeprefix("torch."),
        device=loaded.device.type,
        version=__version__,
        api_key=api_key,
    )
    app = create_app(engine, Codec(loaded.tokenizer), settings)

    async def stop_engine(_: web.Application) -> None:
        await asyncio.to_thread(engine.stop)

    app.on_shutdown.append(stop_engine)
    engine.start()
    host, port = sock.getsockname()[:2]
    logger.info("serving %s on %s (auth %s)", settings.name, url_for(host, port), "on" if api_key else "off")
    web.run_app(
        app, sock=sock, print=None, access_log=None, handler_cancellation=True, shutdown_timeout=5.0, backlog=1024
    )
    engine.stop()
    if crashed.is_set():
        raise ComptrustError("the generation worker crashed (traceback above); restart the server")
    stats = engine.stats
    logger.info(
        "stopped after %d requests (%d generated tokens, %d cancelled, %d failed)",
        stats.completed,
        stats.generated_tokens,
        stats.cancelled,
        stats.failed,
    )


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    run_server(
        EmbeddedConfig(
            model=args.model,
            name=args.name,
            host=args.host,
            port=args.port,
            dtype=args.dtype,
            device=args.device,
            max_batch=args.max_batch,
            max_concurrent_requests=args.max_concurrent_requests,
            max_prefill_tokens=args.max_prefill_tokens,
            max_total_tokens=args.max_total_tokens,
            max_new_tokens=args.max_new_tokens,
            api_key_env=args.api_key_env,
            trust_remote_code=args.trust_remote_code,
            threads=args.threads,
            exit_with_parent=args.exit_with_parent,
        )
    )
    return 0


class _LossyStream(io.TextIOBase):
    """A standard stream whose writes never raise: a server whose log is on a full disk loses log lines, and goes on
    serving (a progress bar or a log line failing with ENOSPC would otherwise stop it while loading)."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except OSError:
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._inner.flush()

    def fileno(self) -> int:
        return self._inner.fileno()

    def isatty(self) -> bool:
        return self._inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._inner.encoding


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # its own process: its output is its log
        sys.stdout, sys.stderr = _LossyStream(sys.stdout), _LossyStream(sys.stderr)
    return run_cli(_main, argv, prog=PROG)
