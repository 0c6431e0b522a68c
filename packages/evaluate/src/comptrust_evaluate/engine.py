"""The async engine: every endpoint at once, one pooled aiohttp session and an adaptive concurrency limit per endpoint
(see :mod:`comptrust_evaluate.concurrency`), retries that tell rate limits and transient faults from final errors, one
record appended per finished request."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from comptrust_core import Attribute, Endpoint, ScoreField

from comptrust_evaluate.concurrency import AimdController, ConcurrencyGate, TokenBucket
from comptrust_evaluate.config import Limits, RetryPolicy, Timeouts
from comptrust_evaluate.plan import Unit, WorkItems
from comptrust_evaluate.progress import ProgressReporter
from comptrust_evaluate.protocols import Generation, ProtocolClient, ProtocolError
from comptrust_evaluate.record_builder import add_verdict, build_record
from comptrust_evaluate.refusal import RefusalDetector
from comptrust_evaluate.scorers import ToxicityScorer, toxicity_fields
from comptrust_evaluate.store import RecordWriter

__all__ = ["EndpointJob", "open_session", "run_jobs"]

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
_gc_depth = [0]
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
_OVERLOAD_STATUS = frozenset({429, 503})


@dataclass(frozen=True)
class EndpointJob:
    endpoint: Endpoint
    client: ProtocolClient
    units: WorkItems  # each pending request with its record key (iterable, with its count)
    writer: RecordWriter
    secret: str | None = field(default=None, repr=False)  # redacted from error text, should a server echo it
    toxicity: ToxicityScorer | None = None  # scores the responses of tasks that need it (``Task.needs_toxicity``)
    refusal: tuple[RefusalDetector, ...] = ()  # more detectors judging every generated answer (``--refusal-detector``)
    refusal_pool: Executor | None = field(default=None, repr=False)  # where the blocking ones run


@dataclass(frozen=True)
class _Attempt:
    generation: Generation | None = None
    error: str | None = None
    http_status: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    overload: bool = False  # the server says it has too much to do: 429, 503, or no answer in time


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo or UTC)).total_seconds())


_second: list[Any] = [-1, ""]  # the last whole UTC second formatted, and its text


def _utc_now() -> str:
    """Now in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; the seconds part formatted once per second."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    if seconds != _second[0]:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{nanos // 1000:06d}Z"


def _error_text(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
        message = data.get("error") if isinstance(data, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        text = str(message) if message else body.decode("utf-8", "replace")
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace")
    return f"HTTP {status}: {' '.join(text.split())[:300]}"


async def _attempt(session: aiohttp.ClientSession, client: ProtocolClient, unit: Unit) -> _Attempt:
    call = client.build(unit.request)
    try:
        async with session.post(client.url(call.path), json=call.body) as resp:
            body = await resp.read()
            if resp.status == 200:
                try:
                    return _Attempt(generation=client.parse(call, json.loads(body)), http_status=200)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return _Attempt(error="HTTP 200 with malformed JSON", http_status=200, retryable=True)
                except ProtocolError as exc:
                    return _Attempt(error=f"HTTP 200 with an unreadable answer: {exc}", http_status=200, retryable=True)
            retryable = resp.status in _TRANSIENT_STATUS or resp.status >= 500
            return _Attempt(
                error=_error_text(resp.status, body),
                http_status=resp.status,
                retryable=retryable,
                overload=resp.status in _OVERLOAD_STATUS,
                retry_after=_retry_after(resp.headers.get("Retry-After")) if retryable else None,
            )
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _Attempt(error="timed out", retryable=True, overload=True)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return _Attempt(error=f"connection failed: {type(exc).__name__}: {exc}", retryable=True)
    except aiohttp.ClientError as exc:
        return _Attempt(error=f"request failed: {type(exc).__name__}: {exc}")


@dataclass
class _Lane:
    """One endpoint's running state: its job, session, gate (concurrency, Retry-After pauses, rps) and settings."""

    job: EndpointJob
    session: aiohttp.ClientSession
    gate: ConcurrencyGate
    policy: RetryPolicy
    progress: ProgressReporter
    rng: random.Random = field(default_factory=random.Random)

    def feedback(self, result: _Attempt, started: float, latency: float) -> None:
        """Tell the controller what an attempt says about the server's load."""
        controller = self.gate.controller
        if not controller.adaptive:
            return
        before, backed_off = controller.current, False
        if result.overload:
            backed_off = controller.on_overload(started)
            if result.retry_after:
                self.gate.pause(min(result.retry_after, self.policy.retry_after_max_s))
        elif result.generation is not None:
            controller.on_success(latency)
        if controller.current != before or backed_off:
            self.progress.set_limit(self.job.endpoint.name, controller.current, backed_off)


async def _execute(lane: _Lane, unit: Unit, key: str) -> dict[str, Any]:
    """Send ``unit`` (retrying as the policy says) and return what its record is built from (:func:`build_record`'s
    arguments): the record itself is built by the lane's :class:`_Finisher`, after the worker has sent its next
    request."""
    job, policy = lane.job, lane.policy
    attempts = 0
    while True:
        attempts += 1
        await lane.gate.acquire()
        started = time.monotonic()
        try:
            result = await _attempt(lane.session, job.client, unit)
        finally:
            lane.gate.release()
        latency = time.monotonic() - started
        lane.feedback(result, started, latency)
        if result.generation is not None or not result.retryable or attempts >= policy.max_attempts:
            break
        delay = policy.delay(attempts, result.retry_after, lane.rng)
        log.debug("%s %s: %s; retry %d in %.2fs", job.endpoint.name, unit.item.item_id, result.error, attempts, delay)
        lane.progress.retried(job.endpoint.name)
        await asyncio.sleep(delay)
    error = result.error
    if error is not None and job.secret:
        error = error.replace(job.secret, "***")
    if error is not None and result.retryable:
        error = f"{error} (gave up after {attempts} attempts)"
    extra: tuple[list[ScoreField], list[Attribute]] = ([], [])
    text = result.generation.text if result.generation is not None else ""
    if job.toxicity is not None and unit.task.needs_toxicity and result.generation is not None:
        # after the endpoint's gate is released: a slow scorer (Perspective's 1 QPS) holds no endpoint slot; a blank
        # answer gets its (empty) toxicity field too: DecodingTrust counts it -1 in its prompt's maximum
        extra = await toxicity_fields(job.toxicity, text)
    if job.refusal and text.strip() and not unit.request.params.prompt_logprobs:
        await _refusal_fields(job, text, extra)
    return {
        "endpoint": job.endpoint,
        "client": job.client,
        "unit": unit,
        "key": key,
        "generation": result.generation,
        "error": error,
        "http_status": result.http_status,
        "latency_s": latency,
        "attempts": attempts,
        "finished_at": _utc_now(),
        "extra_scores": extra[0],
        "extra_attributes": extra[1],
    }


class _Feed:
    """The shared iterator of an endpoint's pending (unit, key) pairs, with a buffer that the finisher fills ahead
    of the workers (enumerating a unit and computing its key is a large part of a request's own CPU). Workers take
    from the buffer first, so the order is the iterator's."""

    def __init__(self, units: Iterator[tuple[Unit, str]]) -> None:
        self.units = units
        self.ahead: deque[tuple[Unit, str]] = deque()

    def __iter__(self) -> Iterator[tuple[Unit, str]]:
        return self

    def __next__(self) -> tuple[Unit, str]:
        if self.ahead:
            return self.ahead.popleft()
        return next(self.units)

    def fill(self, count: int) -> None:
        """Enumerate up to ``count`` more units into the buffer."""
        self.ahead.extend(itertools.islice(self.units, count))


class _Finisher:
    """Builds the records of one endpoint's finished requests and appends them, in the loop turn after they finish
    (all of that turn's at once, written with one flush). A worker hands its finished request over and goes on to
    send its next one at once: under a thousand requests in flight, the parsing, scoring and serializing of answers
    no longer delays the requests that replace them. A kill -9 still loses only what was in flight or had finished
    in the last turn (which a resume redoes)."""

    def __init__(self, job: EndpointJob, progress: ProgressReporter, feed: _Feed) -> None:
        self.job = job
        self.progress = progress
        self.feed = feed
        self.queue: list[dict[str, Any]] = []
        self.scheduled = False
        self.error: BaseException | None = None

    def add(self, finished: dict[str, Any]) -> None:
        self.queue.append(finished)
        if not self.scheduled:
            asyncio.get_running_loop().call_soon(self.drain)
            self.scheduled = True

    def drain(self) -> None:
        """Build, append and flush every queued record now."""
        self.scheduled = False
        queue, self.queue = self.queue, []
        name, writer = self.job.endpoint.name, self.job.writer
        for finished in queue:
            try:
                record = build_record(**finished)
            except Exception as exc:  # a bug, not a server's fault: the request is not recorded (a rerun redoes it)
                log.exception("endpoint %s: no record for %s", name, finished["key"])
                self.error = self.error or exc
                self.progress.finished(name, ok=False, refused=False)
                continue
            writer.write(record)
            self.progress.finished(
                name, ok=record.status == "ok", refused=bool(record.refusal), tokens=record.completion_tokens or 0
            )
        writer.flush()
        self.feed.fill(len(queue))  # the next units those workers will take, enumerated off their critical path


async def _refusal_fields(job: EndpointJob, text: str, into: tuple[list[ScoreField], list[Attribute]]) -> None:
    """Each extra detector's verdict as a ``refusal`` score of its own variant, and the rule that fired."""
    for detector in job.refusal:
        if detector.blocking:
            verdict = await asyncio.get_running_loop().run_in_executor(job.refusal_pool, detector.detect, text)
        else:
            verdict = detector.detect(text)
        add_verdict(detector.name, verdict, *into)


def open_session(concurrency: int, timeouts: Timeouts, headers: dict[str, str]) -> aiohttp.ClientSession:
    """A pooled session: keep-alive connections up to ``concurrency``, with connect/read/total timeouts."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=timeouts.total_s, connect=timeouts.connect_s, sock_read=timeouts.read_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)


async def _run_job(
    job: EndpointJob, limits: Limits, timeouts: Timeouts, policy: RetryPolicy, progress: ProgressReporter
) -> None:
    name = job.endpoint.name
    controller = AimdController(cap=limits.max_concurrency, adaptive=limits.adaptive)
    gate = ConcurrencyGate(controller, TokenBucket(limits.rps) if limits.rps else None)
    progress.set_limit(name, controller.current)
    pending = _Feed(iter(job.units))

    finisher = _Finisher(job, progress, pending)

    async def worker(lane: _Lane) -> None:
        for unit, key in pending:  # one shared iterator: each unit is taken by exactly one worker
            progress.started(name)
            finisher.add(await _execute(lane, unit, key))

    try:
        async with open_session(limits.max_concurrency, timeouts, job.client.headers()) as session:
            lane = _Lane(job, session, gate, policy, progress)
            await asyncio.gather(*(worker(lane) for _ in range(min(limits.max_concurrency, len(job.units)))))
    finally:
        finisher.drain()  # what finished before an interrupt or a failure is recorded, too
    if finisher.error is not None:
        raise RuntimeError(f"endpoint {name}: a finished request could not be recorded") from finisher.error
    if controller.backoffs:
        log.info(
            "endpoint %s: backed off %d times, ending at %d in flight", name, controller.backoffs, controller.current
        )


@contextlib.contextmanager
def quiet_gc(threshold: int = GC_THRESHOLD) -> Iterator[None]:
    """The garbage collector tuned for a long run of small requests, restored afterwards: what exists when the run
    starts (the plan, the modules) is frozen out of the collector's scans, and a young-generation collection waits
    for ``threshold`` allocations instead of 700. With a thousand requests in flight the default settings spend
    about as much CPU scanning live coroutines, connections and units as the requests themselves take; memory held in
    reference cycles stays bounded by ``threshold`` allocations' worth."""
    _gc_depth[0] += 1
    if _gc_depth[0] > 1:  # runs nest (or overlap): the outermost one tunes and restores
        try:
            yield
        finally:
            _gc_depth[0] -= 1
        return
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        _gc_depth[0] -= 1
        gc.set_threshold(*before)
        gc.unfreeze()


async def run_jobs(
    jobs: Sequence[EndpointJob],
    limits: Limits,
    timeouts: Timeouts,
    policy: RetryPolicy,
    progress: ProgressReporter,
) -> None:
    """Run every endpoint's pending units concurrently; records are written as requests finish."""
    with quiet_gc():
        await asyncio.gather(*(_run_job(job, limits, timeouts, policy, progress) for job in jobs if job.units))
