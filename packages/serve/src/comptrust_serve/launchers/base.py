"""What every launcher takes and gives back: :class:`LaunchOptions` in, a running :class:`ServerHandle` out; and
:class:`Startup`, through which whoever starts servers can call off those still starting."""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, Protocol

from comptrust_core import EndpointError
from comptrust_core.endpoint import Endpoint

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.health import probe

__all__ = ["LaunchOptions", "Launcher", "ServerHandle", "ServerStartError", "StartCancelled", "Startup"]

logger = logging.getLogger(__name__)


class ServerStartError(EndpointError):
    """A server exited, or never answered its health check, while starting. The message carries its log's tail."""


class StartCancelled(ServerStartError):
    """A start was called off (:meth:`Startup.cancel`); what it had started is stopped."""


@dataclass(frozen=True)
class LaunchOptions:
    """How to start a server. ``port=None`` lets :func:`comptrust_serve.launch` pick a free one.

    ``api_key_env`` names the environment variable holding the bearer token the server will require; the key itself
    never passes through here. ``extra_args`` go to the server's command line as they are; ``env`` is added to the
    server's environment.

    The engine fields matter to the launchers that run a real inference server (docker, process): ``engine`` picks
    TGI or vLLM, ``image`` overrides the engine's default container image, ``gpus`` are the device indices this
    server gets (empty: none, or the engine's default), ``num_shard`` splits the model over that many GPUs,
    ``quantize`` overrides the ``--quantize`` value the checkpoint's manifest asks for, ``max_input_tokens`` and
    ``max_total_tokens`` bound request sizes, and ``shm_size`` sizes a container's /dev/shm.
    """

    host: str = "127.0.0.1"
    port: int | None = None
    dtype: str | None = None
    device: str | None = None
    max_batch: int = 32
    max_concurrent_requests: int = 128
    max_total_tokens: int | None = None
    api_key_env: str | None = None
    trust_remote_code: bool = False
    startup_timeout_s: float = 600.0
    stop_timeout_s: float = 10.0
    log_dir: Path | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    engine: Literal["tgi", "vllm"] = "tgi"
    image: str | None = None
    gpus: tuple[int, ...] = ()
    num_shard: int | None = None
    quantize: str | None = None
    max_input_tokens: int | None = None
    shm_size: str = "1g"
    engine_command: tuple[str, ...] | None = None
    """The process launcher's program for the engine, replacing the one it finds (e.g. another vLLM's
    ``python -m vllm.entrypoints.openai.api_server``)."""


class ServerHandle(abc.ABC):
    """A running server: its :class:`Endpoint`, and how to stop it. Use it as a context manager.

    Keep the handle while the server should run: process-based servers also exit when their launching process does.
    """

    endpoint: Endpoint
    log_path: Path | None = None

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the server is still running."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server (gracefully, then forcibly); safe to call more than once."""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log, where it has one."""
        return ""

    def _with_tail(self, message: str) -> str:
        """``message`` followed by the last lines of the server's log, for start errors."""
        tail = self.log_tail()
        if not tail:
            return f"{message} (its log {self.log_path} is empty)"
        indented = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"{message}; last lines of its log {self.log_path}:\n{indented}"

    def _starting_as(self) -> str:
        """What is starting, for messages: ``server for NAME``, ``container C for NAME``."""
        return f"server for {self.endpoint.name}"

    def _exit_code(self) -> int | Literal[False] | None:
        """``False`` while the server runs (or is still being set up); else its exit code (None where unknown)."""
        return False if self.is_alive() else None

    def wait_healthy(self, timeout_s: float, *, interval_s: float = 0.2, startup: Startup | None = None) -> None:
        """Return once ``/health`` answers 200. Else stop the server and raise :class:`ServerStartError` (it exited,
        or ``timeout_s`` passed, the message ending with its log's tail), or :class:`StartCancelled` as soon as
        ``startup`` is cancelled."""
        deadline = time.monotonic() + timeout_s
        name, url = self.endpoint.name, self.endpoint.url
        while True:
            if startup is not None and startup.cancelled:
                self.stop()
                raise StartCancelled(f"the start of {name} was called off; it is stopped")
            code = self._exit_code()
            if code is not False:
                self.stop()
                raise ServerStartError(self._with_tail(f"{self._starting_as()} exited with code {code} while starting"))
            if probe(url, timeout_s=max(interval_s, 1.0)):
                logger.info("%s is healthy at %s", self._starting_as(), url)
                return
            if time.monotonic() > deadline:
                self.stop()
                waited = f"did not answer {url}/health within {timeout_s:g} s"
                raise ServerStartError(self._with_tail(f"{self._starting_as()} {waited}"))
            if startup is not None:
                startup.sleep(interval_s)
            else:
                time.sleep(interval_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.name} {self.endpoint.url} alive={self.is_alive()}>"


class Startup:
    """The starts of one batch of servers (a fleet), which whoever started them can call off together.

    A launcher hands the handle of what it spawned to :meth:`spawned` as soon as it exists (before its health wait),
    and its health wait polls :attr:`cancelled` (sleeping with :meth:`sleep`, which wakes up on :meth:`cancel`).
    :meth:`cancel` stops every server spawned so far, healthy or not, without waiting for any to come up; one spawned
    afterwards is stopped at once. Thread-safe: starts run on threads, the cancel comes from the main thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._handles: list[ServerHandle] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the starts are called off meanwhile."""
        self._event.wait(seconds)

    def check(self, name: str) -> None:
        """Raise :class:`StartCancelled` (for the server ``name``) if the starts were called off."""
        if self.cancelled:
            raise StartCancelled(f"the start of {name} was called off")

    def spawned(self, handle: ServerHandle) -> None:
        """Record ``handle`` so that :meth:`cancel` stops it (again is fine); if the starts were called off already,
        stop it now and raise :class:`StartCancelled`."""
        with self._lock:
            if not self.cancelled:
                if all(known is not handle for known in self._handles):
                    self._handles.append(handle)
                return
        handle.stop()
        raise StartCancelled(f"the start of {handle.endpoint.name} was called off; it is stopped")

    def cancel(self) -> None:
        """Call off every start: stop every server spawned so far (all at once) and return when they are stopped."""
        with self._lock:
            self._event.set()
            handles = list(self._handles)
        stoppers = [threading.Thread(target=_stop, args=(h,), name=f"stop-{h.endpoint.name}") for h in handles]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()


def _stop(handle: ServerHandle) -> None:
    try:
        handle.stop()
    except Exception:
        logger.exception("stopping %s failed", handle.endpoint.name)


class Launcher(Protocol):
    """A way to run a checkpoint behind an HTTP server (registered with :func:`register_launcher`)."""

    name: ClassVar[str]

    def unavailable_reason(self) -> str | None:
        """``None`` when this launcher can run here, else why not (what to install or start)."""
        ...

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        """Start a server for ``checkpoint`` on ``port``; return once it is healthy, or raise
        :class:`ServerStartError` having stopped whatever it started. With ``startup``, hand what it spawned to
        :meth:`Startup.spawned` before waiting for health, and give up (stopping it, raising
        :class:`StartCancelled`) as soon as ``startup`` is cancelled."""
        ...
