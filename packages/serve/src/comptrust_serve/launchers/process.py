"""Servers as child processes: spawning with a log file, waiting for health, stopping without orphans; and the
``process`` launcher, which runs a real engine (TGI's ``text-generation-launcher`` or ``vllm serve``) that way.

The child runs in its own session (a terminal's Ctrl-C reaches only the launching process, which then stops the child
in order) and gets a pipe as stdin that only the launching process holds: when that process dies, the pipe closes, and
a server started with ``--exit-with-parent`` shuts itself down (engines that cannot do that run under
:mod:`comptrust_serve.launchers.guard`, which does it for them). :meth:`ProcessHandle.stop` sends SIGTERM to the
child, then SIGKILL to its whole process group after a grace period.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

from comptrust_core import ConfigError
from comptrust_core.endpoint import Endpoint
from comptrust_core.storage import is_storage_error

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.engine_install import engine_python
from comptrust_serve.launchers import register_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle, Startup
from comptrust_serve.launchers.engines import ENGINE_BINARIES, check_engine_options, engine_command
from comptrust_serve.launchers.guard import guard_argv
from comptrust_serve.ports import free_port, url_for

__all__ = ["ProcessHandle", "ProcessLauncher", "log_path_for", "serve_child", "spawn"]

logger = logging.getLogger(__name__)


def log_path_for(log_dir: Path | None, name: str, port: int) -> Path:
    """A fresh log file for a server: in ``log_dir`` if given, else in the system's temporary folder (``/dev/null``
    where the disk refuses to make one: a full disk must not keep a server from serving)."""
    try:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"comptrust-serve-{name}-{port}-", suffix=".log", dir=log_dir)
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        logger.warning("no log file for %s in %s (%s); the server runs without a log", name, log_dir, exc)
        return Path(os.devnull)
    os.close(fd)
    return Path(path)


def spawn(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``, stdin a pipe we hold. A log that
    cannot be opened (its disk full or read-only) does not keep the server from starting: it runs without one."""
    try:
        log = log_path.open("ab")
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        logger.warning("%s cannot be opened (%s); the server runs without a log", log_path, exc)
        log = open(os.devnull, "ab")  # noqa: SIM115 - closed below, once the child holds its own copy
    with log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )


def read_tail(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    if not path.is_file():  # a device (/dev/null, /dev/full) reads nothing useful, or forever
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


class ProcessHandle(ServerHandle):
    """A server running as our child process."""

    def __init__(
        self, endpoint: Endpoint, process: subprocess.Popen[bytes], log_path: Path, stop_timeout_s: float = 10.0
    ) -> None:
        self.endpoint = endpoint
        self.process = process
        self.log_path: Path = log_path
        self.stop_timeout_s = stop_timeout_s
        self._stop_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return read_tail(self.log_path, lines)

    def _exit_code(self) -> int | Literal[False] | None:
        code = self.process.poll()
        return False if code is None else code

    def _signal_group(self, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        """SIGTERM the child, SIGKILL its process group after ``stop_timeout_s``; wait for the child to exit."""
        with self._stop_lock:  # the health wait and a cancelled fleet may both stop it
            self._stop()

    def _stop(self) -> None:
        if self.process.poll() is None:
            logger.info("stopping %s (pid %d)", self.endpoint.name, self.pid)
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)  # the child stops its own children (a guard, TGI's shards)
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %g s; killing it", self.endpoint.name, self.stop_timeout_s)
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        self._signal_group(signal.SIGKILL)  # anything the child left behind in its group
        if self.process.stdin is not None:
            with suppress(OSError):
                self.process.stdin.close()


@register_launcher("process")
class ProcessLauncher:
    """A real engine (``text-generation-launcher`` or ``vllm serve``, by ``options.engine``) run from PATH as our child,
    under :mod:`comptrust_serve.launchers.guard` so that it dies with this process."""

    name: ClassVar[str] = "process"

    def unavailable_reason(self) -> str | None:
        if any(shutil.which(binary) for binary in ENGINE_BINARIES.values()) or engine_python() is not None:
            return None
        return (
            "neither text-generation-launcher (TGI) nor vllm is on PATH, and no vLLM is installed "
            "(`uv run serve install-engine vllm`); install one, or use --launcher embedded"
        )

    def preflight(self, options: LaunchOptions) -> None:
        """Raise :class:`ConfigError` on engine flags that cannot work, or unless ``options.engine``'s program is
        there: ``--engine-command``, an installed vLLM (``serve install-engine vllm``), or PATH's (checked before
        any start)."""
        check_engine_options(options)
        if options.engine_command:
            if shutil.which(options.engine_command[0]) is None and not Path(options.engine_command[0]).exists():
                raise ConfigError(f"--engine-command: {options.engine_command[0]} is not a program here")
            return
        if options.engine == "vllm" and engine_python({**os.environ, **options.env}) is not None:
            return
        binary = ENGINE_BINARIES[options.engine]
        if shutil.which(binary, path=options.env.get("PATH")) is None:
            other = "vllm" if options.engine == "tgi" else "tgi"
            install = (
                "; or `uv run serve install-engine vllm` (its own environment)" if options.engine == "vllm" else ""
            )
            raise ConfigError(
                f"--engine {options.engine} needs {binary} on PATH{install}; install it, pick --engine {other}, "
                "or use --launcher docker or embedded"
            )

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        self.preflight(options)
        environ = {**os.environ, **options.env}
        command = engine_command(checkpoint, options, port, master_port=free_port(), environ=environ)
        logger.info("%s: %s", checkpoint.name, " ".join(command.argv))
        argv = guard_argv(list(command.argv), options.stop_timeout_s)
        env = {**environ, **command.env, "PYTHONUNBUFFERED": "1"}
        return serve_child(
            checkpoint,
            replace(options, dtype=command.dtype),
            port,
            argv,
            env,
            protocol=command.protocol,
            launcher=self.name,
            engine=options.engine,
            startup=startup,
        )


def serve_child(
    checkpoint: Checkpoint,
    options: LaunchOptions,
    port: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    protocol: Literal["tgi", "openai"],
    launcher: str,
    engine: str,
    startup: Startup | None = None,
) -> ProcessHandle:
    """Spawn ``argv`` (logging to a fresh file in ``options.log_dir``), describe it as an endpoint on ``port``, and
    wait for its health within ``options.startup_timeout_s``; stop it on any failure or interruption, or as soon as
    ``startup`` is cancelled (which stops it too: it is handed over before the health wait)."""
    if startup is not None:
        startup.check(checkpoint.name)
    log_path = log_path_for(options.log_dir, checkpoint.name, port)
    process = spawn(argv, log_path=log_path, env=env)
    endpoint = Endpoint(
        name=checkpoint.name,
        url=url_for(options.host, port),
        protocol=protocol,
        model=checkpoint.name,
        api_key_env=options.api_key_env,
        checkpoint=str(checkpoint.path),
        manifest=checkpoint.manifest,
        launcher=launcher,
        handle=str(process.pid),
        engine=engine,
        dtype=options.dtype,
    )
    handle = ProcessHandle(endpoint, process, log_path, stop_timeout_s=options.stop_timeout_s)
    try:
        if startup is not None:
            startup.spawned(handle)
        handle.wait_healthy(options.startup_timeout_s, startup=startup)
    except BaseException:
        handle.stop()
        raise
    return handle
