"""The ``embedded`` launcher: comptrust's own transformers server (``python -m comptrust_serve.embedded``) as a child
process, so that the model and the client's event loop never share a GIL. Assigned GPUs (``options.gpus``) become the
child's ``CUDA_VISIBLE_DEVICES``; the device it runs on is still ``options.device`` (CPU unless told)."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import ClassVar

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers import register_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle, Startup
from comptrust_serve.launchers.process import serve_child

__all__ = ["EmbeddedLauncher", "embedded_argv"]


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
        env = {**os.environ, **options.env, "PYTHONUNBUFFERED": "1"}
        if options.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, options.gpus))
        argv = embedded_argv(checkpoint, options, port)
        return serve_child(
            checkpoint, options, port, argv, env, protocol="tgi", launcher=self.name, engine="embedded", startup=startup
        )
