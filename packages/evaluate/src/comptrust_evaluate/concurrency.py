"""How one endpoint is driven: how many requests it gets at once (an AIMD controller), how long one request may take
(adaptive deadlines), when it is judged down (a circuit breaker), and the asyncio gate that enforces the limit and an
optional requests-per-second cap. The controller, the deadlines and the breaker are pure objects, driven by outcomes
and a clock, tested with a fake one.

Outcomes come in three kinds, as mature clients tell them apart:

- *overload* (429, 503): the server has too much to do. The limit is halved, at most once per episode: outcomes of
  requests sent before the last cut, or within ``cooldown_s`` of it, say nothing new.
- *transient* (other 5xx, a reset or refused connection, a malformed body, a request cut by its deadline): retried
  with jittered backoff; never a cut, and no growth from it.
- *permanent* (400, 401, 403, 404, 422 ...): not retried.

The limit starts at the cap (``--max-concurrency``) and grows back additively, by ``step`` per window of ``limit``
successes, and only while it is saturated (every slot taken, or requests waiting for one): a limit that is not
reached says nothing about whether a higher one would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AimdController", "Breaker", "ConcurrencyGate", "Deadlines", "TokenBucket"]


@dataclass
class AimdController:
    """The concurrency limit of one endpoint. ``adaptive=False`` keeps it at ``cap``."""

    cap: int
    adaptive: bool = True
    floor: int = 1
    decrease: float = 0.5
    step: float = 0.0  # additive growth per window; 0: max(1, cap / 64)
    cooldown_s: float = 1.0  # an overload episode: no second cut within this long of the last one
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    limit: float = field(init=False)
    backoffs: int = field(default=0, init=False)
    _last_backoff: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        if self.cap < 1 or not 1 <= self.floor <= self.cap:
            raise ValueError("need 1 <= floor <= cap")
        self.limit = float(self.cap)
        if self.step <= 0:
            self.step = max(1.0, self.cap / 64)

    @property
    def current(self) -> int:
        """Requests allowed in flight now."""
        return max(self.floor, min(self.cap, int(self.limit)))

    def on_success(self, saturated: bool = True) -> None:
        """A request answered. ``saturated``: every slot was taken (or requests waited for one) as it finished."""
        if not self.adaptive or not saturated or self.limit >= self.cap:
            return
        self.limit = min(float(self.cap), self.limit + self.step / max(self.limit, 1.0))

    def on_overload(self, started_at: float) -> bool:
        """A 429 or 503 to a request sent at ``started_at`` (this clock); True if the limit went down."""
        now = self.clock()
        if not self.adaptive or started_at <= self._last_backoff or now - self._last_backoff < self.cooldown_s:
            return False
        self.limit = max(float(self.floor), self.limit * self.decrease)
        self._last_backoff = now
        self.backoffs += 1
        return True


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Deadlines:
    """How long one attempt may take before it is cut and retried (a transient fault).

    Until ``min_samples`` answers of a generation length (``max_new_tokens``) have come back, an attempt gets the
    static ``ceiling_s`` (``--timeout``). From then on it gets

        max(floor_s, multiple x p99 latency of the answers of that length,
            2 x p99 seconds per generated token x max_new_tokens)

    (the last term from answers of at least ``long_tokens`` tokens, so that a request that runs to its full length
    is never cut because the ones before it stopped early), doubled for each time this request was already cut, and
    never more than ``ceiling_s``. The quantiles are over the last ``window`` answers, refreshed every
    ``refresh`` answers. ``adaptive=False``: always ``ceiling_s``.
    """

    ceiling_s: float
    adaptive: bool = True
    multiple: float = 10.0
    floor_s: float = 1.0
    min_samples: int = 20
    window: int = 512
    refresh: int = 32
    long_tokens: int = 16
    _latency: dict[int, deque[float]] = field(default_factory=dict, init=False, repr=False)
    _p99: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    _per_token: deque[float] = field(init=False, repr=False)
    _per_token_p99: float = field(default=0.0, init=False)
    _seen: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    version: int = field(default=0, init=False)  # goes up whenever a deadline may have changed

    def __post_init__(self) -> None:
        if self.ceiling_s <= 0 or self.floor_s <= 0 or self.multiple < 1:
            raise ValueError("need ceiling_s > 0, floor_s > 0 and multiple >= 1")
        self._per_token = deque(maxlen=self.window)

    def observe(self, latency_s: float, max_new_tokens: int, tokens: int | None) -> None:
        """An answer came back after ``latency_s`` with ``tokens`` generated (if the server said)."""
        if not self.adaptive:
            return
        seen = self._latency.get(max_new_tokens)
        if seen is None:
            seen = self._latency[max_new_tokens] = deque(maxlen=self.window)
        seen.append(latency_s)
        count = self._seen[max_new_tokens] = self._seen.get(max_new_tokens, 0) + 1
        if tokens is not None and tokens >= self.long_tokens:
            self._per_token.append(latency_s / tokens)
            if len(self._per_token) % self.refresh == 1 or len(self._per_token) < self.min_samples:
                self._per_token_p99 = _quantile(sorted(self._per_token), 0.99)
                self.version += 1
        if count >= self.min_samples and (count % self.refresh == 0 or max_new_tokens not in self._p99):
            self._p99[max_new_tokens] = _quantile(sorted(seen), 0.99)
            self.version += 1

    def for_attempt(self, max_new_tokens: int, cuts: int = 0) -> float:
        """Seconds the next attempt of a request of this length may take; ``cuts``: times it was cut already."""
        p99 = self._p99.get(max_new_tokens) if self.adaptive else None
        if p99 is None:
            return self.ceiling_s
        deadline = max(self.floor_s, self.multiple * p99, 2.0 * self._per_token_p99 * max_new_tokens)
        return min(self.ceiling_s, deadline * 2.0**cuts)


BreakerState = Literal["closed", "open", "dead"]


@dataclass
class Breaker:
    """Whether an endpoint is up. ``threshold`` failures in a row that say the server is not answering (5xx,
    connection refused or reset, a deadline) with no answer between open it: then nothing is sent but one probe (the
    next waiting request) every ``probe_interval_s``, growing to ``probe_max_s``; an answer closes it again (a
    restarted server is picked up). Open for ``give_up_s`` with no answer, it is ``dead``: the endpoint stops and
    its requests not yet answered are left for a rerun.

    It also stops an endpoint that answers every request with the same kind of permanent error (a wrong model name, a
    bad key): ``permanent_threshold`` of them and not one answer yet.
    """

    threshold: int = 10
    probe_interval_s: float = 1.0
    probe_max_s: float = 10.0
    give_up_s: float = 60.0
    permanent_threshold: int = 20
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: BreakerState = field(default="closed", init=False)
    failures: int = field(default=0, init=False)  # in a row
    why: str = field(default="", init=False)  # the last failure that counted, or why the endpoint stopped
    opened: int = field(default=0, init=False)  # times it opened
    answered: bool = field(default=False, init=False)
    _permanent: int = field(default=0, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _next_probe: float = field(default=0.0, init=False)
    _interval: float = field(default=0.0, init=False)
    _probing: bool = field(default=False, init=False)

    def on_answer(self) -> None:
        """An answer: the server is up and serving."""
        self.answered = True
        self.on_alive()

    def on_alive(self) -> None:
        """A reply that is not an answer but shows the server up (a 429, a 4xx, a malformed body)."""
        self.failures = 0
        self._probing = False
        if self.state == "open":
            self.state = "closed"

    def on_failure(self, why: str, probe: bool = False) -> None:
        """An attempt that the server did not answer (``probe``: the one let through while open)."""
        if probe:
            self._probing = False
        if self.state == "dead":
            return
        self.failures += 1
        self.why = why
        if self.failures >= self.threshold:
            self.trip()

    def trip(self) -> None:
        """Open now: a request spent all its attempts on failures that came in a row with nothing answered between
        (the endpoint went down under it, before ``threshold`` failures were counted)."""
        if self.state == "closed":
            now = self.clock()
            self.state, self._opened_at, self._next_probe = "open", now, now + self.probe_interval_s
            self._interval = self.probe_interval_s
            self.opened += 1

    def on_permanent(self, why: str) -> None:
        """A permanent error (4xx); stops the endpoint if nothing was ever answered and every request fails so."""
        self._permanent += 1
        if not self.answered and self._permanent >= self.permanent_threshold and self.state != "dead":
            self.state = "dead"
            self.why = f"every request fails with {why}"

    def admit(self) -> float | None:
        """None: send now (while open: the one probe, the caller reports back with ``probe=True``); else seconds to
        wait before asking again. ``state == 'dead'`` afterwards means: stop."""
        if self.state == "closed":
            return None
        if self.state == "dead":
            return 0.0
        now = self.clock()
        if now - self._opened_at >= self.give_up_s:
            self.state = "dead"
            self.why = f"no answer for {self.give_up_s:g}s ({self.why})"
            return 0.0
        if self._probing or now < self._next_probe:
            return max(0.05, min(self._next_probe - now, self._opened_at + self.give_up_s - now))
        self._probing = True
        self._interval = min(self.probe_max_s, self._interval * 2)
        self._next_probe = now + self._interval
        return None

    @property
    def probing(self) -> bool:
        return self._probing


class TokenBucket:
    """At most ``rate`` starts per second on average, in bursts of at most ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def wait_time(self) -> float:
        """0 and a token taken if one is available now; else the seconds until one will be (nothing taken)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class ConcurrencyGate:
    """Admits request attempts to one endpoint: under the controller's limit, after any Retry-After pause, and under
    the token bucket if there is one. Waiters are admitted in arrival order."""

    def __init__(self, controller: AimdController, bucket: TokenBucket | None = None) -> None:
        self.controller = controller
        self.bucket = bucket
        self.in_flight = 0
        self._paused_until = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def saturated(self) -> bool:
        """Every slot taken, or requests waiting for one."""
        return self.in_flight >= self.controller.current or bool(self._waiters)

    def pause(self, seconds: float) -> None:
        """Start nothing new for ``seconds`` (a server's Retry-After)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _admissible(self) -> float | None:
        """None if an attempt may start now (and count it), else seconds to wait (0: until a release)."""
        if self.in_flight >= self.controller.current:
            return 0.0
        if self._paused_until:
            left = self._paused_until - time.monotonic()
            if left > 0:
                return left
            self._paused_until = 0.0
        if self.bucket is not None:
            wait = self.bucket.wait_time()
            if wait > 0:
                return wait
        self.in_flight += 1
        return None

    async def acquire(self) -> None:
        if not self._waiters and self._admissible() is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # admitted, then cancelled before it could run
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            if self._waiters[0].cancelled():
                self._waiters.popleft()
                continue
            wait = self._admissible()
            if wait is not None:
                if wait > 0 and self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                return
            self._waiters.popleft().set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()
