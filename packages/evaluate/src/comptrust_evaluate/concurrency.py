"""How many requests an endpoint gets at once: an AIMD controller (a pure object, driven by outcomes and a clock) and
the asyncio gate that enforces it together with Retry-After pauses and an optional requests-per-second cap.

The controller starts at the cap (``--max-concurrency``, the most the user allows) and backs off multiplicatively when
the server says it is overloaded (429, 503, a timeout), at most once per round trip: outcomes of requests that started
before the last back-off say nothing new. While answers come back fine and latency stays near the best seen, it grows
additively again, by ``step`` per window (one window = ``limit`` successes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AimdController", "ConcurrencyGate", "TokenBucket"]


@dataclass
class AimdController:
    """The concurrency limit of one endpoint. ``adaptive=False`` keeps it at ``cap``."""

    cap: int
    adaptive: bool = True
    floor: int = 1
    decrease: float = 0.5
    step: float = 0.0  # additive growth per window; 0: max(1, cap / 64)
    latency_tolerance: float = 3.0  # no growth while smoothed latency exceeds this many times the best seen
    limit: float = field(init=False)
    backoffs: int = field(default=0, init=False)
    _last_backoff: float = field(default=-math.inf, init=False)
    _best_latency: float = field(default=math.inf, init=False)
    _smoothed_latency: float | None = field(default=None, init=False)

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

    def on_success(self, latency_s: float) -> None:
        """A request answered (any answer that is not an overload signal)."""
        if not self.adaptive:
            return
        self._best_latency = min(self._best_latency, latency_s)
        smoothed = self._smoothed_latency
        self._smoothed_latency = latency_s if smoothed is None else 0.9 * smoothed + 0.1 * latency_s
        if self.limit >= self.cap or self._smoothed_latency > self.latency_tolerance * self._best_latency:
            return
        self.limit = min(float(self.cap), self.limit + self.step / max(self.limit, 1.0))

    def on_overload(self, started_at: float) -> bool:
        """A 429, 503 or timeout of a request sent at ``started_at``; True if the limit went down."""
        if not self.adaptive or started_at < self._last_backoff:
            return False
        self.limit = max(float(self.floor), self.limit * self.decrease)
        self._last_backoff = time.monotonic()
        self.backoffs += 1
        return True


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
