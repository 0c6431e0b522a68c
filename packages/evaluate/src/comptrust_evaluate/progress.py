"""Progress per endpoint: a live rich bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["EndpointProgress", "ProgressReporter", "make_reporter"]

log = logging.getLogger(__name__)


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "0"


@dataclass
class EndpointProgress:
    """One endpoint's counts. ``taken``: requests taken from the plan and not yet finished (being sent, waiting for
    a slot, or sleeping before a retry: up to ``WORKERS_PER_SLOT`` x the cap); ``sending``: attempts on the wire
    now, which the limit bounds."""

    name: str
    total: int
    done: int = 0
    resumed: int = 0
    ok: int = 0
    errors: int = 0
    refusals: int = 0
    retries: int = 0
    tokens: int = 0
    taken: int = 0
    limit: int = 0
    backoffs: int = 0
    breaker: str = "closed"
    breaker_why: str = ""
    outages: int = 0  # times the breaker opened (and, unless it is dead now, closed again)
    stopped: str | None = None  # why the breaker gave up on the endpoint
    retry_kinds: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    sending_now: Callable[[], int] | None = field(default=None, repr=False)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def sending(self) -> int:
        return self.sending_now() if self.sending_now is not None else self.taken

    @property
    def left(self) -> int:
        return self.total - self.done

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Requests finished per second by this invocation."""
        return (self.done - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def token_rate(self) -> float:
        """Generated tokens per second (as the servers report them) in this invocation."""
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        sending = self.sending
        breaker = self.breaker if self.breaker == "closed" else f"{self.breaker} ({self.breaker_why})"
        return (
            f"{self.name}: {self.done}/{self.total} done, {self.rate:.1f} req/s, {self.token_rate:.0f} tok/s, "
            f"{sending} sending (limit {self.limit}), {max(0, self.taken - sending)} waiting (a slot or a retry), "
            f"retries: {_by_kind(self.retry_kinds)}, errors: {_by_kind(self.error_kinds)}, breaker {breaker}"
        )


class ProgressReporter:
    """Counts per endpoint; subclasses show them. The base class shows nothing."""

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointProgress] = {}

    def add(self, name: str, total: int, resumed: int) -> None:
        self.endpoints[name] = EndpointProgress(name=name, total=total, done=resumed, resumed=resumed)

    def watch(self, name: str, sending: Callable[[], int]) -> None:
        """Where to read how many attempts the endpoint has on the wire."""
        self.endpoints[name].sending_now = sending

    def started(self, name: str) -> None:
        self.endpoints[name].taken += 1

    def abandoned(self, name: str) -> None:
        """A request taken but left unanswered (its endpoint stopped): not done, a rerun sends it."""
        self.endpoints[name].taken -= 1

    def retried(self, name: str, reason: str = "") -> None:
        ep = self.endpoints[name]
        ep.retries += 1
        ep.retry_kinds[reason or "other"] = ep.retry_kinds.get(reason or "other", 0) + 1

    def set_limit(self, name: str, limit: int, backed_off: bool = False) -> None:
        """The endpoint's concurrency limit changed (the adaptive controller backed off or grew)."""
        ep = self.endpoints[name]
        ep.limit = limit
        ep.backoffs += backed_off

    def set_breaker(self, name: str, state: str, why: str = "") -> None:
        ep = self.endpoints[name]
        ep.outages += state == "open" and ep.breaker == "closed"
        ep.breaker, ep.breaker_why = state, why

    def stopped(self, name: str, why: str) -> None:
        ep = self.endpoints[name]
        ep.stopped, ep.breaker, ep.breaker_why = why, "dead", why
        ep.finished = ep.finished or time.monotonic()

    def unwritten(self, name: str, ok: int, errors: int) -> None:
        """Requests counted finished whose records never reached the disk: not done after all (a rerun sends them)."""
        if not ok and not errors:
            return
        ep = self.endpoints[name]
        ep.done -= ok + errors
        ep.ok -= ok
        ep.errors -= errors
        ep.finished = ep.finished or time.monotonic()

    def finished(self, name: str, ok: bool, refused: bool, tokens: int = 0, reason: str = "") -> None:
        ep = self.endpoints[name]
        ep.taken -= 1
        ep.done += 1
        ep.tokens += tokens
        ep.ok += ok
        ep.errors += not ok
        if not ok:
            ep.error_kinds[reason or "other"] = ep.error_kinds.get(reason or "other", 0) + 1
        ep.refusals += refused
        if ep.done == ep.total:
            ep.finished = time.monotonic()

    async def __aenter__(self) -> ProgressReporter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ep in self.endpoints.values():
            ep.finished = ep.finished or time.monotonic()


class _PeriodicReporter(ProgressReporter):
    """A reporter that does ``_on_tick`` every ``period`` seconds while requests run, in one background task."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self._period = period
        self._ticker: asyncio.Task[None] | None = None

    def _on_tick(self) -> None:
        raise NotImplementedError

    def _on_start(self) -> None:
        """Called as the run starts, before the first tick."""

    def _on_stop(self) -> None:
        """Called once the run is over and the ticker has stopped."""

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            self._on_tick()

    async def __aenter__(self) -> ProgressReporter:
        self._on_start()
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._on_stop()


class BarReporter(_PeriodicReporter):
    """A live bar per endpoint. The counters are copied into the bars ``refresh_per_second`` times a second, not at
    every request: at thousands of requests a second, per-request updates would cost more than the requests."""

    def __init__(self, console: Console, refresh_per_second: float = 10.0) -> None:
        super().__init__(1.0 / refresh_per_second)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} req/s"),
            TextColumn("{task.fields[tokens]:>7.0f} tok/s"),
            TextColumn("{task.fields[sending]:>4}/{task.fields[limit]} sending"),
            TextColumn("{task.fields[waiting]} waiting"),
            TextColumn("retries {task.fields[retries]}"),
            TextColumn("errors {task.fields[errors]}"),
            TextColumn("{task.fields[breaker]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=refresh_per_second,
        )
        self._ids: dict[str, TaskID] = {}

    def add(self, name: str, total: int, resumed: int) -> None:
        super().add(name, total, resumed)
        self._ids[name] = self._progress.add_task(
            name,
            total=total,
            completed=resumed,
            rate=0.0,
            tokens=0.0,
            sending=0,
            waiting=0,
            limit=0,
            retries="0",
            errors="0",
            breaker="",
        )

    def _refresh(self, name: str) -> None:
        ep = self.endpoints[name]
        self._progress.update(
            self._ids[name],
            completed=ep.done,
            rate=ep.rate,
            tokens=ep.token_rate,
            sending=(sending := ep.sending),
            waiting=max(0, ep.taken - sending),
            limit=ep.limit,
            retries=_by_kind(ep.retry_kinds),
            errors=_by_kind(ep.error_kinds),
            breaker="" if ep.breaker == "closed" else f"breaker {ep.breaker}",
        )

    def _on_tick(self) -> None:
        for name in self.endpoints:
            self._refresh(name)

    def _on_start(self) -> None:
        self._progress.start()

    def _on_stop(self) -> None:
        for name in self.endpoints:
            self._refresh(name)
        self._progress.stop()


class LogReporter(_PeriodicReporter):
    """One log line per endpoint every ``interval`` seconds while requests run."""

    def _on_tick(self) -> None:
        for ep in self.endpoints.values():
            if ep.finished is None:
                log.info("%s", ep.line())


def make_reporter(mode: str, interval: float) -> ProgressReporter:
    """``auto``: a bar when stdout is a terminal, else log lines; ``bar``, ``log``, or ``off``."""
    if mode == "off":
        return ProgressReporter()
    console = Console(file=sys.stdout)
    if mode == "bar" or (mode == "auto" and console.is_terminal):
        return BarReporter(console)
    return LogReporter(interval)
