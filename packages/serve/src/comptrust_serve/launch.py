"""``launch()``: a checkpoint folder in, a healthy server's handle out, whatever the launcher."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from comptrust_serve.checkpoint import Checkpoint, open_checkpoint
from comptrust_serve.launchers import resolve_launcher
from comptrust_serve.launchers.base import Launcher, LaunchOptions, ServerHandle, Startup
from comptrust_serve.ports import check_port_free, free_port

__all__ = ["launch", "launch_checkpoint"]

logger = logging.getLogger(__name__)


def launch_checkpoint(
    checkpoint: Checkpoint,
    launcher: str | Launcher = "auto",
    options: LaunchOptions | None = None,
    *,
    startup: Startup | None = None,
) -> ServerHandle:
    """Start ``checkpoint`` with ``launcher`` (a name, ``auto`` picks one; or a launcher); returns once ``/health``
    answers.

    A busy ``options.port`` is a :class:`~comptrust_core.ConfigError`; a server that dies or never becomes healthy
    is a :class:`~comptrust_serve.launchers.ServerStartError` carrying its log's tail, and nothing is left running.
    ``startup`` lets another thread call the start off (:meth:`Startup.cancel`), which stops the server.
    """
    options = options or LaunchOptions()
    chosen = resolve_launcher(launcher) if isinstance(launcher, str) else launcher
    if options.port is None:
        port = free_port(options.host)
    else:
        check_port_free(options.host, options.port)
        port = options.port
    logger.info("starting %s with the %s launcher on %s:%d", checkpoint.name, chosen.name, options.host, port)
    return chosen.launch(checkpoint, options, port, startup=startup)


def launch(
    model_dir: str | Path,
    launcher: str = "embedded",
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    name: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    max_batch: int = 32,
    max_concurrent_requests: int = 128,
    max_total_tokens: int | None = None,
    api_key_env: str | None = None,
    trust_remote_code: bool = False,
    startup_timeout_s: float = 600.0,
    stop_timeout_s: float = 10.0,
    log_dir: str | Path | None = None,
    extra_args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    engine: Literal["tgi", "vllm"] = "tgi",
    gpus: tuple[int, ...] = (),
    num_shard: int | None = None,
    quantize: str | None = None,
    max_input_tokens: int | None = None,
) -> ServerHandle:
    """Serve the checkpoint in ``model_dir`` and return its handle (``.endpoint``, ``.stop()``; a context manager).

    The endpoint is named ``name``, else the manifest's name (``comptrust.json``), else the folder's name. With
    ``port=None`` a free port is picked. See :class:`LaunchOptions` for the other parameters.
    """
    checkpoint = open_checkpoint(Path(model_dir), name)
    options = LaunchOptions(
        host=host,
        port=port,
        dtype=dtype,
        device=device,
        max_batch=max_batch,
        max_concurrent_requests=max_concurrent_requests,
        max_total_tokens=max_total_tokens,
        api_key_env=api_key_env,
        trust_remote_code=trust_remote_code,
        startup_timeout_s=startup_timeout_s,
        stop_timeout_s=stop_timeout_s,
        log_dir=Path(log_dir) if log_dir is not None else None,
        extra_args=tuple(extra_args),
        env=dict(env or {}),
        engine=engine,
        gpus=tuple(gpus),
        num_shard=num_shard,
        quantize=quantize,
        max_input_tokens=max_input_tokens,
    )
    return launch_checkpoint(checkpoint, launcher, options)
