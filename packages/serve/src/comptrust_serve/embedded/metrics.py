"""``GET /metrics``: Prometheus text exposition with TGI's metric names (``tgi_*``), so dashboards and scrapers built
for TGI read the embedded server too.

Counters: ``tgi_request_count`` (generation requests received), ``tgi_request_success``, ``tgi_request_failure``
(labelled ``err`` with the error type), ``tgi_request_generated_tokens_total`` (tokens generated). Histograms:
``tgi_request_duration`` (seconds per request), ``tgi_request_generated_tokens`` and ``tgi_request_input_length``
(tokens per sequence). Gauges, read when scraped: ``tgi_queue_size`` (requests waiting to join the batch) and
``tgi_batch_current_size`` (rows being decoded). Only the event loop's thread updates these, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Histogram", "Metrics"]

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0)


@dataclass
class Histogram:
    """Cumulative-bucket histogram in Prometheus's sense."""

    name: str
    help: str
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {self.total:g}", f"{self.name}_count {self.count}"]
        return lines


@dataclass
class Metrics:
    """What ``/metrics`` reports; the app calls :meth:`request_done` and :meth:`sequence_done`."""

    requests: int = 0
    successes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    generated_tokens: int = 0
    duration: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_duration", "Request duration in seconds", _DURATION_BUCKETS)
    )
    generated: Histogram = field(
        default_factory=lambda: Histogram(
            "tgi_request_generated_tokens", "Generated tokens per sequence", _TOKEN_BUCKETS
        )
    )
    input_length: Histogram = field(
        default_factory=lambda: Histogram("tgi_request_input_length", "Prompt tokens per sequence", _TOKEN_BUCKETS)
    )

    def request_done(self, seconds: float, error_type: str | None) -> None:
        self.requests += 1
        self.duration.observe(seconds)
        if error_type is None:
            self.successes += 1
        else:
            self.failures[error_type] += 1

    def sequence_done(self, prompt_tokens: int, generated_tokens: int) -> None:
        self.generated_tokens += generated_tokens
        self.generated.observe(generated_tokens)
        self.input_length.observe(prompt_tokens)

    def render(self, *, queue_size: int, batch_size: int) -> str:
        """The Prometheus text exposition (version 0.0.4)."""

        def scalar(name: str, kind: str, help_text: str, value: int) -> list[str]:
            return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]

        lines = scalar("tgi_request_count", "counter", "Generation requests received", self.requests)
        lines += scalar("tgi_request_success", "counter", "Generation requests answered", self.successes)
        lines += ["# HELP tgi_request_failure Generation requests failed, by error type"]
        lines += ["# TYPE tgi_request_failure counter"]
        lines += [f'tgi_request_failure{{err="{err}"}} {n}' for err, n in sorted(self.failures.items())]
        lines += scalar("tgi_request_generated_tokens_total", "counter", "Tokens generated", self.generated_tokens)
        lines += scalar("tgi_queue_size", "gauge", "Requests waiting to join the batch", queue_size)
        lines += scalar("tgi_batch_current_size", "gauge", "Sequences in the running batch", batch_size)
        for histogram in (self.duration, self.generated, self.input_length):
            lines += histogram.render()
        return "\n".join(lines) + "\n"
