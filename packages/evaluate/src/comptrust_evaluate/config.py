"""Typed, frozen configuration of one ``evaluate`` invocation (the CLI builds it from flags)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from comptrust_core import ConfigError, Endpoint, Protocol

from comptrust_evaluate.refusal import detector_names

__all__ = [
    "EndpointSpec",
    "EvaluateConfig",
    "Limits",
    "RetryPolicy",
    "Timeouts",
    "check_task_limits",
    "derive_endpoint_name",
]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 429, 5xx, connection resets and timeouts: jittered exponential backoff, honouring Retry-After."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0
    give_up_s: float = 60.0  # an endpoint that answers nothing for this long (its breaker open) is stopped
    breaker_threshold: int = 10  # failures in a row (5xx, connection, deadline) that open the breaker

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max attempts must be at least 1")
        if self.give_up_s <= 0:
            raise ConfigError("--give-up-after must be positive")
        if self.breaker_threshold < 1:
            raise ConfigError("the breaker threshold must be at least 1")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): "equal jitter" exponential backoff,
        but never less than the server's Retry-After (capped at ``retry_after_max_s``)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        wait = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max_s))
        return wait


@dataclass(frozen=True)
class Limits:
    """Per endpoint: at most ``max_concurrency`` requests in flight (the cap of the adaptive limit, or the fixed one
    with ``adaptive=False``), and at most ``rps`` requests started per second if given."""

    max_concurrency: int = 64
    adaptive: bool = True
    rps: float | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ConfigError("--max-concurrency must be at least 1")
        if self.rps is not None and self.rps <= 0:
            raise ConfigError("--rps must be positive")


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits: to connect, between reads, and overall (seconds). With ``adaptive`` (the default) an
    attempt's overall limit is its adaptive deadline (:class:`comptrust_evaluate.concurrency.Deadlines`: a multiple
    of the latency the endpoint shows for that generation length, with a floor), never more than ``total_s``."""

    connect_s: float = 10.0
    read_s: float = 300.0
    total_s: float = 600.0
    adaptive: bool = True
    deadline_multiple: float = 10.0
    deadline_floor_s: float = 1.0

    def __post_init__(self) -> None:
        if min(self.connect_s, self.read_s, self.total_s, self.deadline_floor_s) <= 0:
            raise ConfigError("timeouts must be positive")
        if self.deadline_multiple < 1:
            raise ConfigError("--deadline-multiple must be at least 1")


def derive_endpoint_name(url: str) -> str:
    """``http://127.0.0.1:8080/v1`` → ``127.0.0.1_8080``."""
    parts = urlsplit(url)
    host = parts.hostname or "endpoint"
    return f"{host}_{parts.port}" if parts.port else host


def check_task_limits(task_limits: tuple[tuple[str, int], ...]) -> None:
    """Each task once, each limit at least 1 (whether the tasks are the suite's is checked by :func:`build_plan`)."""
    seen: set[str] = set()
    for task, n in task_limits:
        if task in seen:
            raise ConfigError(f"--task-limit names {task} twice; give each task one limit")
        seen.add(task)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"--task-limit {task}={n}: the limit must be a whole number, at least 1")


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint to evaluate, before its protocol is detected (``protocol=None``) and its name derived."""

    url: str
    name: str | None = None
    protocol: Protocol | None = None
    model: str | None = None
    api_key_env: str | None = None
    base: Endpoint | None = field(default=None, compare=False)
    replicas: tuple[str, ...] = ()
    """More servers of the same checkpoint (base URLs): one logical endpoint, its requests spread over all of them."""

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> EndpointSpec:
        return cls(
            url=endpoint.url,
            name=endpoint.name,
            protocol=endpoint.protocol,
            model=endpoint.model,
            api_key_env=endpoint.api_key_env,
            base=endpoint,
        )

    def resolved(self, protocol: Protocol, model: str | None = None) -> Endpoint:
        """The core :class:`Endpoint` this spec becomes once its protocol (and model) are known."""
        try:
            if self.base is not None:
                return self.base.model_copy(update={"protocol": protocol, "model": model or self.model})
            return Endpoint(
                name=self.name or derive_endpoint_name(self.url),
                url=self.url,
                protocol=protocol,
                model=model or self.model,
                api_key_env=self.api_key_env,
            )
        except ValueError as exc:
            raise ConfigError(f"endpoint {self.url}: {exc}") from None


@dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate (a suite or a prompts file), against which endpoints, into which run directory."""

    out: Path
    endpoints: tuple[EndpointSpec, ...]
    suite: str | None = None
    prompts: Path | None = None
    data_dir: Path | None = None
    max_concurrency: int = 64
    adaptive_concurrency: bool = True
    rps: float | None = None
    retry_errors: bool = False
    compact: bool = False  # fold the records into Parquet at the end of the run
    limit: int | None = None
    task_limits: tuple[tuple[str, int], ...] = ()  # (task, items per scenario) pairs: this task's instead of limit
    sample: float | None = None  # a deterministic fraction of each scenario's items (by sample_seed)
    sample_seed: int = 0
    tasks: tuple[str, ...] = ()  # only these tasks of the suite (all if empty)
    dt_compat: bool = False  # send DecodingTrust's Llama-2 prompt strings as raw prompts
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    log_interval_s: float = 10.0
    toxicity_scorer: str = "offline"  # a scorers registry name, or "none" to leave toxicity unscored
    toxicity_options: tuple[tuple[str, str], ...] = ()  # the scorer's options, KEY=VALUE pairs
    refusal_detectors: tuple[str, ...] = ()  # more detectors judging every answer, next to the task's own and broad

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigError("no endpoint to evaluate; pass --endpoint URL or --endpoints endpoints.json")
        if (self.suite is None) == (self.prompts is None):
            raise ConfigError("pass exactly one of --suite NAME or --prompts FILE")
        if self.max_concurrency < 1:
            raise ConfigError("--max-concurrency must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.sample is not None and not 0.0 < self.sample <= 1.0:
            raise ConfigError(f"--sample must be a fraction in (0, 1], got {self.sample}")
        if self.tasks and self.prompts is not None:
            raise ConfigError("--task picks tasks of a --suite; a --prompts file runs as it is")
        if self.task_limits and self.prompts is not None:
            raise ConfigError("--task-limit limits tasks of a --suite; a --prompts file takes --limit")
        check_task_limits(self.task_limits)
        Limits(self.max_concurrency, self.adaptive_concurrency, self.rps)  # validates them
        known = detector_names()
        for name in self.refusal_detectors:
            if name not in known:
                raise ConfigError(
                    f"--refusal-detector {name!r} is not a refusal detector; choose from {', '.join(known)}"
                )

    @property
    def limits(self) -> Limits:
        return Limits(self.max_concurrency, self.adaptive_concurrency, self.rps)
