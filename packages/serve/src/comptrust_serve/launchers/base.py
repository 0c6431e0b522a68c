"""What every launcher takes and gives back: :class:`LaunchOptions` in, a running :class:`ServerHandle` out."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, Protocol

from comptrust_core import EndpointError
from comptrust_core.endpoint import Endpoint

from comptrust_serve.checkpoint import Checkpoint

__all__ = ["LaunchOptions", "Launcher", "ServerHandle", "ServerStartError"]


class ServerStartError(EndpointError):
    """A server exited, or never answered its health check, while starting. The message carries its log's tail."""


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

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.name} {self.endpoint.url} alive={self.is_alive()}>"


class Launcher(Protocol):
    """A way to run a checkpoint behind an HTTP server (registered with :func:`register_launcher`)."""

    name: ClassVar[str]

    def unavailable_reason(self) -> str | None:
        """``None`` when this launcher can run here, else why not (what to install or start)."""
        ...

    def launch(self, checkpoint: Checkpoint, options: LaunchOptions, port: int) -> ServerHandle:
        """Start a server for ``checkpoint`` on ``port``; return once it is healthy, or raise
        :class:`ServerStartError` having stopped whatever it started."""
        ...
