"""The ``embedded`` launcher: comptrust's own transformers server (``python -m comptrust_serve.embedded``) as a child
process, so that the model and the client's event loop never share a GIL. Assigned GPUs (``options.gpus``) become the
child's ``CUDA_VISIBLE_DEVICES``; the device it runs on is still ``options.device`` (CPU unless told).

On the CPU the dtype is decided here, before the child starts (:func:`comptrust_core.cpu_dtype.choose_cpu_dtype`):
the child gets the dtype it computes in, the endpoint records it, and the line saying why ``auto`` fell back to
float32 (or why an explicit 16-bit dtype is slow here) goes to whoever launched it, not only to the server's log."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import replace
from typing import ClassVar

from comptrust_core.cpu_dtype import choose_cpu_dtype

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers import register_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle, Startup
from comptrust_serve.launchers.process import serve_child

__all__ = ["EmbeddedLauncher", "embedded_argv", "embedded_cpu_dtype"]

logger = logging.getLogger(__name__)


def embedded_cpu_dtype(checkpoint: Checkpoint, options: LaunchOptions) -> str | None:
    """The dtype the embedded server computes ``checkpoint`` in when it runs on the CPU (``options.device`` None or
    ``cpu``), logged where ``auto`` falls back or a 16-bit dtype is slow; else ``options.dtype`` as it is (a GPU, or
    ``auto`` device: the child decides)."""
    if (options.device or "cpu").lower() != "cpu":
        return options.dtype
    choice = choose_cpu_dtype(options.dtype, checkpoint.stored_dtype())
    choice.log(checkpoint.name, logger)
    return choice.dtype if options.dtype is not None else None


def embedded_argv(checkpoint: Checkpoint, options: LaunchOptions, port: int) -> list[str]:
    """The child's command line."""
    argv = [
        sys.executable,
        "-m",
        "comptrust_serve.embedded",
        "--model",
        str(checkpoint.path),
        "--name",
        checkpoint.name,
        "--host",
        options.host,
        "--port",
        str(port),
        "--max-batch",
        str(options.max_batch),
        "--max-concurrent-requests",
        str(options.max_concurrent_requests),
        "--exit-with-parent",
    ]
    for flag, value in (
        ("--dtype", options.dtype),
        ("--device", options.device),
        ("--max-total-tokens", options.max_total_tokens),
        ("--api-key-env", options.api_key_env),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    return [*argv, *options.extra_args]


@register_launcher("embedded")
class EmbeddedLauncher:
    name: ClassVar[str] = "embedded"

    def unavailable_reason(self) -> str | None:
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed; install comptrust-serve[embedded]"
        return None

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        dtype = embedded_cpu_dtype(checkpoint, options)
        if dtype != options.dtype:
            options = replace(options, dtype=dtype)
        env = {**os.environ, **options.env, "PYTHONUNBUFFERED": "1"}
        if options.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, options.gpus))
        argv = embedded_argv(checkpoint, options, port)
        return serve_child(
            checkpoint, options, port, argv, env, protocol="tgi", launcher=self.name, engine="embedded", startup=startup
        )
