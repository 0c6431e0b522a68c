"""Fleets: several checkpoints started at once, each on its own GPUs and port; one that fails does not stop the rest.

``launch_fleet(checkpoints, "process", LaunchOptions(gpus=(0, 1, 2, 3)))`` places the checkpoints on the GPUs
(:func:`comptrust_serve.placement.place`: one GPU each, or ``num_shard`` each), gives them ports (``options.port``,
``+1``, ... or free ones), starts them concurrently, and returns a :class:`Fleet` holding the healthy servers and
the failures. Stop it (or leave its ``with``) to stop every server. Interrupted while starting (Ctrl-C, or SIGTERM
turned into KeyboardInterrupt), it stops every server already spawned, up or still starting, without waiting for any
to become healthy (:class:`~comptrust_serve.launchers.Startup`), and starts no more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType

from comptrust_core import ConfigError
from comptrust_core.endpoint import Endpoint

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launch import launch_checkpoint
from comptrust_serve.launchers import Launcher, resolve_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle, StartCancelled, Startup
from comptrust_serve.placement import place
from comptrust_serve.ports import check_port_free, free_port

__all__ = ["Fleet", "FleetFailure", "fleet_ports", "launch_fleet"]

logger = logging.getLogger(__name__)

_WAIT_S = 0.5
"""How often the waiting thread wakes (an interrupt is acted on at once all the same: the wait is interruptible)."""


@dataclass(frozen=True)
class FleetFailure:
    """A checkpoint that did not start: its name, the GPUs it was given, and the error (with the server's log tail)."""

    name: str
    gpus: tuple[int, ...]
    error: str


@dataclass
class Fleet:
    """The servers of one :func:`launch_fleet` call that are up, in the order the checkpoints were given, and the
    checkpoints that failed to start."""

    launcher: str
    handles: list[ServerHandle] = field(default_factory=list)
    failures: list[FleetFailure] = field(default_factory=list)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [handle.endpoint for handle in self.handles]

    def stop(self) -> None:
        """Stop every server (last started first); safe to call more than once."""
        for handle in reversed(self.handles):
            handle.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def fleet_ports(count: int, host: str, first: int | None) -> list[int]:
    """``count`` distinct ports: ``first``, ``first + 1``, ... (each checked free), or ports the OS picks."""
    if first is not None:
        ports = [first + i for i in range(count)]
        for port in ports:
            if not 0 < port < 65536:
                raise ConfigError(f"port {port} is out of range 1-65535")
            check_port_free(host, port)
        return ports
    chosen: list[int] = []
    while len(chosen) < count:
        port = free_port(host)
        if port not in chosen:
            chosen.append(port)
    return chosen


class _Start(threading.Thread):
    """Starts one server, as part of ``startup`` (which stops it if the fleet is interrupted)."""

    def __init__(self, checkpoint: Checkpoint, launcher: Launcher, options: LaunchOptions, startup: Startup) -> None:
        super().__init__(name=f"start-{checkpoint.name}", daemon=True)
        self.checkpoint = checkpoint
        self.launcher = launcher
        self.options = options
        self.startup = startup
        self.handle: ServerHandle | None = None
        self.error: str | None = None
        self.finished = threading.Event()
        """Set when :meth:`run` has returned. The waiting thread waits on this, not on ``join``: on Python 3.11 a
        KeyboardInterrupt that lands inside ``Thread.join`` can mark a thread that is still running as stopped
        (bpo-45274's handler releases the running thread's own state lock), after which ``join`` returns at once and
        the fleet would give up on a start it still has to wait for. Seen in CI as a start thread left running."""

    def run(self) -> None:
        try:
            handle = launch_checkpoint(self.checkpoint, self.launcher, self.options, startup=self.startup)
            self.startup.spawned(handle)  # a launcher that did not hand it over: stopped here if called off
            self.handle = handle
        except Exception as exc:
            self.error = str(exc) or type(exc).__name__
            if not isinstance(exc, StartCancelled):
                logger.error("%s failed to start: %s", self.checkpoint.name, self.error)
        finally:
            self.finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until this start has ended, at most ``timeout`` seconds; whether it has. Interruptible, and an
        interrupt leaves the thread's state intact (see :attr:`finished`)."""
        if not self.finished.wait(timeout):
            return False
        self.join(timeout)  # run() has returned: only the thread's own exit is left, which takes no time
        return not self.is_alive()


def launch_fleet(
    checkpoints: Sequence[Checkpoint], launcher: str | Launcher = "auto", options: LaunchOptions | None = None
) -> Fleet:
    """Start every checkpoint concurrently; return the :class:`Fleet` of those that came up and those that failed.

    ``options.gpus`` is the pool placed over the checkpoints (``options.num_shard`` GPUs each, default 1); each
    server gets ``options`` with its own ``gpus`` and ``port``. Bad input common to all (unknown launcher, too few
    GPUs, a busy port, an engine that is not installed) raises :class:`ConfigError` before anything starts.
    """
    options = options or LaunchOptions()
    chosen = resolve_launcher(launcher) if isinstance(launcher, str) else launcher
    names = [c.name for c in checkpoints]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"two checkpoints would both be served as {repeated[0]!r}; tell them apart with --name")
    slots = place(len(checkpoints), options.gpus, options.num_shard or 1)
    preflight = getattr(chosen, "preflight", None)
    if preflight is not None:
        preflight(options)
    ports = fleet_ports(len(checkpoints), options.host, options.port)
    startup = Startup()
    starts = [
        _Start(checkpoint, chosen, replace(options, gpus=gpus, port=port), startup)
        for checkpoint, gpus, port in zip(checkpoints, slots, ports, strict=True)
    ]
    fleet = Fleet(launcher=chosen.name)
    try:
        # Every server starts on a thread of its own, one alone too; this thread only waits. Ctrl-C or SIGTERM
        # (raised here as KeyboardInterrupt) then always lands in this wait, never inside a launcher's or a
        # library's code, where an exception raised by a signal handler can break a lock mid-operation (seen in CI:
        # SIGTERM during a container's start surfaced as "release unlocked lock", a failed start, not an interrupt).
        # Interrupted, this thread calls the starts off below: what they spawned is stopped at once, and their
        # health waits give up.
        for start in starts:
            start.start()
        for start in starts:
            while not start.wait(_WAIT_S):
                pass
    except BaseException:
        startup.cancel()  # stops every server spawned so far; any spawned from now on is stopped at once
        deadline = time.monotonic() + options.stop_timeout_s + 5
        for start in starts:
            if start.ident is not None:  # started as a thread: it ends as soon as its launcher sees the cancel
                start.wait(max(0.0, deadline - time.monotonic()))
        raise
    for start in starts:
        if start.handle is not None:
            fleet.handles.append(start.handle)
        else:
            fleet.failures.append(FleetFailure(start.checkpoint.name, start.options.gpus, start.error or "unknown"))
    return fleet
