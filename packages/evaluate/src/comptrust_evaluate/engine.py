"""The async engine: every endpoint at once, one pooled aiohttp session and a concurrency limit per endpoint,
retries that tell rate limits and transient faults from final errors, one record appended per finished request."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from comptrust_core import Endpoint, Record, record_key

from comptrust_evaluate.config import RetryPolicy, Timeouts
from comptrust_evaluate.plan import Unit
from comptrust_evaluate.progress import ProgressReporter
from comptrust_evaluate.protocols import Generation, ProtocolClient, ProtocolError
from comptrust_evaluate.record_builder import build_record
from comptrust_evaluate.store import RecordWriter

__all__ = ["EndpointJob", "open_session", "run_jobs"]

log = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class EndpointJob:
    endpoint: Endpoint
    client: ProtocolClient
    units: Sequence[Unit]
    writer: RecordWriter
    secret: str | None = field(default=None, repr=False)  # redacted from error text, should a server echo it


@dataclass(frozen=True)
class _Attempt:
    generation: Generation | None = None
    error: str | None = None
    http_status: int | None = None
    retryable: bool = False
    retry_after: float | None = None


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
        async with session.post(client.endpoint.url + call.path, json=call.body) as resp:
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
                retry_after=_retry_after(resp.headers.get("Retry-After")) if retryable else None,
            )
    except (TimeoutError, aiohttp.ServerTimeoutError):
        return _Attempt(error="timed out", retryable=True)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return _Attempt(error=f"connection failed: {type(exc).__name__}: {exc}", retryable=True)
    except aiohttp.ClientError as exc:
        return _Attempt(error=f"request failed: {type(exc).__name__}: {exc}")


async def _execute(
    session: aiohttp.ClientSession, job: EndpointJob, unit: Unit, policy: RetryPolicy, rng: random.Random
) -> Record:
    attempts = 0
    while True:
        attempts += 1
        started = time.monotonic()
        result = await _attempt(session, job.client, unit)
        latency = time.monotonic() - started
        if result.generation is not None or not result.retryable or attempts >= policy.max_attempts:
            break
        delay = policy.delay(attempts, result.retry_after, rng)
        log.debug("%s %s: %s; retry %d in %.2fs", job.endpoint.name, unit.item.item_id, result.error, attempts, delay)
        await asyncio.sleep(delay)
    error = result.error
    if error is not None and job.secret:
        error = error.replace(job.secret, "***")
    if error is not None and result.retryable:
        error = f"{error} (gave up after {attempts} attempts)"
    return build_record(
        endpoint=job.endpoint,
        client=job.client,
        unit=unit,
        key=record_key(job.endpoint.name, unit.task.name, unit.item.item_id, unit.sample_index, unit.request),
        generation=result.generation,
        error=error,
        http_status=result.http_status,
        latency_s=latency,
        attempts=attempts,
        finished_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )


def open_session(concurrency: int, timeouts: Timeouts, headers: dict[str, str]) -> aiohttp.ClientSession:
    """A pooled session: keep-alive connections up to ``concurrency``, with connect/read/total timeouts."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=timeouts.total_s, connect=timeouts.connect_s, sock_read=timeouts.read_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)


async def _run_job(
    job: EndpointJob, concurrency: int, timeouts: Timeouts, policy: RetryPolicy, progress: ProgressReporter
) -> None:
    name = job.endpoint.name
    rng = random.Random()
    pending: Iterator[Unit] = iter(job.units)

    async def worker(session: aiohttp.ClientSession) -> None:
        for unit in pending:  # one shared iterator: each unit is taken by exactly one worker
            progress.started(name)
            record = await _execute(session, job, unit, policy, rng)
            job.writer.write(record)
            progress.finished(name, ok=record.status == "ok", refused=bool(record.refusal))

    async with open_session(concurrency, timeouts, job.client.headers()) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(concurrency, len(job.units)))))


async def run_jobs(
    jobs: Sequence[EndpointJob],
    concurrency: int,
    timeouts: Timeouts,
    policy: RetryPolicy,
    progress: ProgressReporter,
) -> None:
    """Run every endpoint's pending units concurrently; records are written as requests finish."""
    await asyncio.gather(*(_run_job(job, concurrency, timeouts, policy, progress) for job in jobs if job.units))
