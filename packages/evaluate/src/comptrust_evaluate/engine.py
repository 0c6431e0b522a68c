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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from comptrust_core import Attribute, Endpoint, ScoreField

from comptrust_evaluate.concurrency import AimdController, Breaker, ConcurrencyGate, Deadlines, TokenBucket
from comptrust_evaluate.config import Limits, RetryPolicy, Timeouts
from comptrust_evaluate.plan import Unit, WorkItems
from comptrust_evaluate.progress import ProgressReporter
from comptrust_evaluate.protocols import Generation, ProtocolClient, ProtocolError
from comptrust_evaluate.record_builder import add_verdict, build_record
from comptrust_evaluate.refusal import RefusalDetector
from comptrust_evaluate.scorers import ToxicityScorer, toxicity_fields
from comptrust_evaluate.store import RecordWriter

__all__ = ["EndpointJob", "EndpointStopped", "RunHalt", "open_session", "run_jobs"]

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
WORKERS_PER_SLOT = 8
"""Requests taken at once per slot of ``--max-concurrency``: the slots bound what is on the wire (the gate), the
workers what waits besides: for a slot, or out its backoff or Retry-After before a retry. With one worker per slot a
faulty endpoint's retries would sleep in the slots' place and starve the healthy requests."""
_gc_depth = [0]
_TRANSIENT_STATUS = frozenset({408, 409, 425})  # and every 5xx but 503
_OVERLOAD_STATUS = frozenset({429, 503})
_DOWN_REASONS = frozenset({"5xx", "503", "connection", "timeout", "deadline"})  # the server is not answering

Kind = Literal["answer", "overload", "transient", "permanent"]


@dataclass
class RunHalt:
    """Shared by every endpoint of a run: once :meth:`stop` is called (a record could not be written: the run cannot
    keep its results), no worker takes or sends another request; what is on the wire finishes."""

    reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


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
    replicas: tuple[ProtocolClient, ...] = ()  # more servers of the same checkpoint: the requests are spread over all
    halt: RunHalt = field(default_factory=RunHalt)  # the run's: set, nothing more is sent (shared by its endpoints)


class EndpointStopped(Exception):
    """The endpoint's breaker gave up on it: its requests not yet answered are left for a rerun."""


@dataclass(frozen=True)
class _Attempt:
    generation: Generation | None = None
    error: str | None = None
    http_status: int | None = None
    kind: Kind = "answer"
    reason: str = ""  # what went wrong, in a word: 429, 503, 5xx, 4xx, timeout, deadline, connection, malformed
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in ("overload", "transient")


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
    """One attempt; the session's timeouts are the static ones (``--timeout``), the adaptive deadline is the
    caller's (:meth:`_Lane.send`)."""
    call = client.build(unit.request)
    try:
        async with session.post(client.url(call.path), json=call.body) as resp:
            body = await resp.read()
            status = resp.status
            if status == 200:
                try:
                    return _Attempt(generation=client.parse(call, json.loads(body)), http_status=200)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return _Attempt(
                        error="HTTP 200 with malformed JSON", http_status=200, kind="transient", reason="malformed"
                    )
                except ProtocolError as exc:
                    return _Attempt(
                        error=f"HTTP 200 with an unreadable answer: {exc}",
                        http_status=200,
                        kind="transient",
                        reason="malformed",
                    )
            kind: Kind
            if status in _OVERLOAD_STATUS:
                kind, reason = "overload", str(status)
            elif status in _TRANSIENT_STATUS or status >= 500:
                kind, reason = "transient", "5xx" if status >= 500 else str(status)
            else:
                kind, reason = "permanent", "4xx" if 400 <= status < 500 else str(status)
            retry_after = _retry_after(resp.headers.get("Retry-After")) if kind != "permanent" else None
            return _Attempt(
                error=_error_text(status, body), http_status=status, kind=kind, reason=reason, retry_after=retry_after
            )
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _Attempt(error="timed out", kind="transient", reason="timeout")
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return _Attempt(error=f"connection failed: {type(exc).__name__}: {exc}", kind="transient", reason="connection")
    except aiohttp.ClientError as exc:
        return _Attempt(error=f"request failed: {type(exc).__name__}: {exc}", kind="permanent", reason="client")


@dataclass(eq=False)  # one per attempt, kept in a set by identity
class _OnTheWire:
    """An attempt being sent: when, how long a generation, how often cut before, and its deadline's timer."""

    started: float
    max_tokens: int
    cuts: int
    timer: asyncio.Timeout


@dataclass
class _Lane:
    """One endpoint's running state: its job, session, gate (concurrency, rps), deadlines, breaker and settings."""

    job: EndpointJob
    session: aiohttp.ClientSession
    gate: ConcurrencyGate
    policy: RetryPolicy
    progress: ProgressReporter
    timeouts: Timeouts = field(default_factory=Timeouts)
    deadlines: Deadlines = field(default_factory=lambda: Deadlines(Timeouts().total_s))
    breaker: Breaker = field(default_factory=Breaker)
    rng: random.Random = field(default_factory=random.Random)
    wire: set[_OnTheWire] = field(default_factory=set)
    client: ProtocolClient | None = None  # the replica this lane sends to (None: the job's own server)
    limit_total: Callable[[], int] | None = None  # the endpoint's limit over all its replicas (None: this lane's)
    _deadlines_seen: int = 0

    @property
    def server(self) -> ProtocolClient:
        return self.client if self.client is not None else self.job.client

    async def send(self, unit: Unit, cuts: int) -> _Attempt:
        """One attempt of ``unit`` under its adaptive deadline (cut: a transient ``deadline`` fault)."""
        loop = asyncio.get_running_loop()
        max_tokens = unit.request.params.max_new_tokens
        deadline = self.deadlines.for_attempt(max_tokens, cuts)
        started = loop.time()
        entry: _OnTheWire | None = None
        try:
            async with asyncio.timeout_at(started + deadline) as timer:
                entry = _OnTheWire(started, max_tokens, cuts, timer)
                self.wire.add(entry)
                return await _attempt(self.session, self.server, unit)
        except TimeoutError:
            when = timer.when()
            took = (when if when is not None else loop.time()) - started
            if took < self.timeouts.total_s:
                return _Attempt(
                    error=f"no answer within its deadline ({took:.2f}s)", kind="transient", reason="deadline"
                )
            return _Attempt(error="timed out", kind="transient", reason="timeout")
        finally:
            if entry is not None:
                self.wire.discard(entry)

    def _redeadline(self) -> None:
        """The deadlines moved: the attempts on the wire get theirs anew (from when each was sent)."""
        self._deadlines_seen = self.deadlines.version
        for entry in self.wire:
            if not entry.timer.expired():  # one that fired already is being cut
                entry.timer.reschedule(entry.started + self.deadlines.for_attempt(entry.max_tokens, entry.cuts))

    async def admit(self) -> bool:
        """Wait until the breaker lets an attempt through; True if it is the probe of an open breaker. Raises
        :class:`EndpointStopped` once the breaker has given up on the endpoint."""
        breaker, name = self.breaker, self.job.endpoint.name
        while True:
            wait = breaker.admit()
            if wait is None:
                return breaker.probing
            self.progress.set_breaker(name, breaker.state, breaker.why)
            if breaker.state == "dead":
                raise EndpointStopped(breaker.why)
            await asyncio.sleep(wait)

    def feedback(
        self, result: _Attempt, started: float, latency: float, *, saturated: bool, probe: bool, max_tokens: int
    ) -> None:
        """Tell the controller, the deadlines and the breaker what an attempt says about the server."""
        controller, breaker, name = self.gate.controller, self.breaker, self.job.endpoint.name
        before, backed_off, state = controller.current, False, breaker.state
        if result.generation is not None:
            controller.on_success(saturated)
            self.deadlines.observe(latency, max_tokens, result.generation.completion_tokens)
            if self.deadlines.version != self._deadlines_seen:
                self._redeadline()
            breaker.on_answer()
        else:
            if result.kind == "overload":
                backed_off = controller.on_overload(started)
            if result.reason in _DOWN_REASONS:
                breaker.on_failure(result.error or result.reason, probe)
            elif result.kind == "permanent":
                breaker.on_alive()
                breaker.on_permanent(result.error or f"HTTP {result.http_status}")
            else:  # 429, a malformed body: the server is there
                breaker.on_alive()
        if controller.current != before or backed_off:
            limit = self.limit_total() if self.limit_total is not None else controller.current
            self.progress.set_limit(name, limit, backed_off)
        if breaker.state != state or breaker.state != "closed":
            self.progress.set_breaker(name, breaker.state, breaker.why)


async def _execute(lane: _Lane, unit: Unit, key: str) -> dict[str, Any]:
    """Send ``unit`` (retrying as the policy says) and return what its record is built from (:func:`build_record`'s
    arguments, and the ``reason`` of a failure): the record itself is built by the lane's :class:`_Finisher`, after
    the worker has sent its next request. Raises :class:`EndpointStopped` if the endpoint's breaker gives up before
    the request is answered (it is then not recorded: a rerun does it)."""
    job, policy, name = lane.job, lane.policy, lane.job.endpoint.name
    max_tokens = unit.request.params.max_new_tokens
    attempts = cuts = 0
    failed: dict[str, int] = {}
    while True:
        probe = await lane.admit()
        attempts += 1
        await lane.gate.acquire()
        if lane.breaker.state == "dead":  # given up while this request waited for a slot
            lane.gate.release()
            raise EndpointStopped(lane.breaker.why)
        if job.halt.reason is not None:  # the run stopped while this request waited for a slot or a retry
            lane.gate.release()
            raise EndpointStopped(job.halt.reason)
        started = time.monotonic()
        saturated = False
        try:
            result = await lane.send(unit, cuts)
            saturated = lane.gate.saturated
        finally:
            lane.gate.release()
        latency = time.monotonic() - started
        lane.feedback(result, started, latency, saturated=saturated, probe=probe, max_tokens=max_tokens)
        if result.generation is not None or not result.retryable:
            break
        failed[result.reason] = failed.get(result.reason, 0) + 1
        cuts += result.reason == "deadline"
        # while the breaker is open the endpoint is down, not this request: it waits for the probe instead of
        # spending its attempts (and is left for a rerun if the endpoint is given up)
        if attempts >= policy.max_attempts and lane.breaker.state == "closed":
            if result.reason not in _DOWN_REASONS or lane.breaker.failures <= attempts:
                break  # the endpoint answered others meanwhile, or no other request failed: this request's own
            lane.breaker.trip()  # its attempts and others' failed in a row with nothing answered: the endpoint is down
            lane.progress.set_breaker(name, lane.breaker.state, lane.breaker.why)
        delay = policy.delay(min(attempts, policy.max_attempts), result.retry_after, lane.rng)
        log.debug("%s %s: %s; retry %d in %.2fs", name, unit.item.item_id, result.error, attempts, delay)
        lane.progress.retried(name, result.reason)
        await asyncio.sleep(delay)
    error = result.error
    if error is not None and job.secret:
        error = error.replace(job.secret, "***")
    if error is not None and result.retryable:
        kinds = ", ".join(f"{reason} x{n}" for reason, n in sorted(failed.items()))
        error = f"{error} (gave up after {attempts} attempts: {kinds})"
    extra: tuple[list[ScoreField], list[Attribute]] = ([], [])
    text = result.generation.text if result.generation is not None else ""
    if job.toxicity is not None and unit.task.needs_toxicity and result.generation is not None:
        # after the endpoint's gate is released: a slow scorer (Perspective's 1 QPS) holds no endpoint slot; a blank
        # answer gets its (empty) toxicity field too: DecodingTrust counts it -1 in its prompt's maximum
        extra = await toxicity_fields(job.toxicity, text)
    if job.refusal and text.strip() and not unit.request.params.prompt_logprobs:
        await _refusal_fields(job, text, extra)
    return {
        "endpoint": job.endpoint
        if lane.client is None
        else job.endpoint.model_copy(update={"url": lane.server.endpoint.url}),
        "client": lane.server,
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
        "reason": result.reason if result.generation is None else "",
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
            reason = finished.pop("reason", "")
            try:
                record = build_record(**finished)
            except Exception as exc:  # a bug, not a server's fault: the request is not recorded (a rerun redoes it)
                log.exception("endpoint %s: no record for %s", name, finished["key"])
                self.error = self.error or exc
                self.progress.finished(name, ok=False, refused=False, reason="unrecorded")
                continue
            writer.write(record)
            self.progress.finished(
                name,
                ok=record.status == "ok",
                refused=bool(record.refusal),
                tokens=record.completion_tokens or 0,
                reason=reason,
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


def _lane_state(limits: Limits, timeouts: Timeouts, policy: RetryPolicy) -> tuple[ConcurrencyGate, Deadlines, Breaker]:
    """A server's own limit, deadlines and breaker (each replica of an endpoint has its own)."""
    controller = AimdController(cap=limits.max_concurrency, adaptive=limits.adaptive)
    gate = ConcurrencyGate(controller, TokenBucket(limits.rps) if limits.rps else None)
    deadlines = Deadlines(
        timeouts.total_s,
        adaptive=timeouts.adaptive,
        multiple=timeouts.deadline_multiple,
        floor_s=timeouts.deadline_floor_s,
    )
    return gate, deadlines, Breaker(threshold=policy.breaker_threshold, give_up_s=policy.give_up_s)


async def _run_job(
    job: EndpointJob, limits: Limits, timeouts: Timeouts, policy: RetryPolicy, progress: ProgressReporter
) -> None:
    """Send one endpoint's pending units. With replicas, each server gets a lane of its own (limit, deadlines,
    breaker, session) and every lane takes from the same pending units: a replica that is given up puts the unit it
    held back for the others and stops; the endpoint stops only when every replica has."""
    name = job.endpoint.name
    servers: tuple[ProtocolClient | None, ...] = (None, *job.replicas)
    states = [_lane_state(limits, timeouts, policy) for _ in servers]
    gates = [gate for gate, _, _ in states]
    progress.set_limit(name, sum(g.controller.current for g in gates))
    progress.watch(name, lambda: sum(g.in_flight for g in gates))
    pending = _Feed(iter(job.units))

    finisher = _Finisher(job, progress, pending)

    async def worker(lane: _Lane) -> None:
        for unit, key in pending:  # one shared iterator: each unit is taken by exactly one worker
            if lane.breaker.state == "dead" or job.halt.reason is not None:
                return
            progress.started(name)
            try:
                finished = await _execute(lane, unit, key)
            except EndpointStopped:
                progress.abandoned(name)
                return
            finisher.add(finished)

    held = [0]  # units taken by some replica's worker and not yet finished
    changed = asyncio.Condition()

    async def replica_worker(lane: _Lane) -> None:
        """As :func:`worker`, but a unit a given-up replica held goes back to the others: a worker whose feed ran
        dry waits while other workers still hold units, and takes any that come back."""
        while True:
            try:
                unit, key = next(pending)
            except StopIteration:
                async with changed:
                    await changed.wait_for(lambda: bool(pending.ahead) or held[0] == 0)
                if pending.ahead:
                    continue
                return
            if lane.breaker.state == "dead" or job.halt.reason is not None:
                pending.ahead.appendleft((unit, key))
                async with changed:
                    changed.notify_all()
                return
            held[0] += 1
            progress.started(name)
            try:
                finished = await _execute(lane, unit, key)
            except EndpointStopped:
                progress.abandoned(name)
                pending.ahead.appendleft((unit, key))  # for another replica, or left for a rerun
                return
            else:
                finisher.add(finished)
            finally:
                held[0] -= 1
                async with changed:
                    changed.notify_all()

    lanes: list[_Lane] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            for server, (gate, deadlines, breaker) in zip(servers, states, strict=True):
                client = server if server is not None else job.client
                session = await stack.enter_async_context(
                    open_session(limits.max_concurrency, timeouts, client.headers())
                )
                lane = _Lane(job, session, gate, policy, progress, timeouts, deadlines, breaker, client=server)
                lane.limit_total = lambda: sum(g.controller.current for g in gates)
                lanes.append(lane)
            workers = min(limits.max_concurrency * WORKERS_PER_SLOT, len(job.units))
            run = replica_worker if job.replicas else worker
            await asyncio.gather(*(run(lane) for lane in lanes for _ in range(workers)))
    finally:
        finisher.drain()  # what finished before an interrupt or a failure is recorded, too
    if finisher.error is not None:
        raise RuntimeError(f"endpoint {name}: a finished request could not be recorded") from finisher.error
    dead = [lane for lane in lanes if lane.breaker.state == "dead"]
    if job.replicas:
        for lane in dead:
            log.warning("endpoint %s: replica %s given up: %s", name, lane.server.endpoint.url, lane.breaker.why)
    if lanes and len(dead) == len(lanes):
        why = dead[0].breaker.why
        progress.stopped(name, why)
        log.error("endpoint %s stopped: %s", name, why)
    backoffs = sum(gate.controller.backoffs for gate in gates)
    if backoffs:
        current = sum(gate.controller.current for gate in gates)
        log.info("endpoint %s: backed off %d times, ending at %d in flight", name, backoffs, current)


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
