"""The ``embedded`` launcher: comptrust's own transformers server (``python -m comptrust_serve.embedded``) as a child
process, so that the model and the client's event loop never share a GIL."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import ClassVar

from comptrust_core.endpoint import Endpoint

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers import register_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle
from comptrust_serve.launchers.process import ProcessHandle, log_path_for, spawn
from comptrust_serve.ports import url_for

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

    def launch(self, checkpoint: Checkpoint, options: LaunchOptions, port: int) -> ServerHandle:
        log_path = log_path_for(options.log_dir, checkpoint.name, port)
        env = {**os.environ, **options.env, "PYTHONUNBUFFERED": "1"}
        process = spawn(embedded_argv(checkpoint, options, port), log_path=log_path, env=env)
        endpoint = Endpoint(
            name=checkpoint.name,
            url=url_for(options.host, port),
            protocol="tgi",
            model=checkpoint.name,
            api_key_env=options.api_key_env,
            checkpoint=str(checkpoint.path),
            manifest=checkpoint.manifest,
            launcher=self.name,
            handle=str(process.pid),
        )
        handle = ProcessHandle(endpoint, process, log_path, stop_timeout_s=options.stop_timeout_s)
        try:
            handle.wait_healthy(options.startup_timeout_s)
        except BaseException:
            handle.stop()
            raise
        return handle
