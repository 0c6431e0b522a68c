"""``evaluate(config)``: plan, check endpoints, open the run directory, run, summarize."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from comptrust_core import ConfigError, EndpointError, RunInfo, StorageError, atomic_write_text, record_key
from comptrust_core.storage import storage_error

from comptrust_evaluate._version import __version__
from comptrust_evaluate.config import EndpointSpec, EvaluateConfig, Timeouts
from comptrust_evaluate.engine import EndpointJob, RunHalt, open_session, run_jobs
from comptrust_evaluate.plan import Plan, Unit, build_plan, load_suite, prompts_suite
from comptrust_evaluate.progress import ProgressReporter, make_reporter
from comptrust_evaluate.protocols import ProtocolClient, detect_protocol, get_protocol
from comptrust_evaluate.refusal import RefusalDetector, get_detector
from comptrust_evaluate.scorers import NO_SCORER, ToxicityScorer, get_scorer
from comptrust_evaluate.space import SpaceWatch
from comptrust_evaluate.store import Finished, compact_endpoint, get_store, lock_run_dir, open_run_dir, parquet_path

__all__ = [
    "EndpointSummary",
    "RunSummary",
    "evaluate",
    "evaluate_async",
    "extra_detectors",
    "make_plan",
    "make_toxicity_scorer",
]

log = logging.getLogger(__name__)

_PROBE_TIMEOUTS = Timeouts(connect_s=10.0, read_s=30.0, total_s=30.0)


@dataclass(frozen=True)
class EndpointSummary:
    name: str
    url: str
    protocol: str
    total: int
    resumed: int
    ok: int
    errors: int
    refusals: int
    elapsed_s: float
    retries: int = 0
    backoffs: int = 0  # times the adaptive limit went down (429, 503)
    final_limit: int = 0  # the concurrency limit at the end
    stopped: str | None = None  # why the endpoint was given up (its breaker), its requests left for a rerun
    left: int = 0  # requests of the plan not done (not recorded) when the run ended
    outages: int = 0  # times the endpoint stopped answering (its breaker opened)
    retry_kinds: tuple[tuple[str, int], ...] = ()  # retries by what went wrong (429, 5xx, deadline, connection ...)
    error_kinds: tuple[tuple[str, int], ...] = ()  # error records by what went wrong

    @property
    def rate(self) -> float:
        return (self.ok + self.errors) / self.elapsed_s if self.elapsed_s > 0 else 0.0


class RecordsNotWritten(StorageError):
    """A record could not be written (the disk full, over quota, read-only or failing): the run stopped sending, the
    file ends on its last whole record, and the message says how many are on disk and how many were lost (exit 4)."""

    def __init__(self, message: str, *, path: str, code: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = code


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    run_id: str
    plan: str
    resumed: bool
    endpoints: tuple[EndpointSummary, ...]

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints)

    @property
    def stopped(self) -> tuple[EndpointSummary, ...]:
        """The endpoints given up on (their breaker): a rerun of the same command does what they left."""
        return tuple(e for e in self.endpoints if e.stopped)


def make_plan(config: EvaluateConfig) -> Plan:
    """The requests ``config`` asks for (without touching any endpoint); its data files are checked (and fetched
    from Hugging Face if the suite reads DecodingTrust's data and no --data-dir is given), its units stay lazy."""
    if config.prompts is not None:
        suite = prompts_suite(config.prompts)
        description: str | None = f"prompts {config.prompts.name}"
    else:
        assert config.suite is not None
        suite, description = load_suite(config.suite, config.data_dir), None
    return build_plan(
        suite,
        config.limit,
        description,
        tasks=config.tasks or None,
        sample=config.sample,
        seed=config.sample_seed,
        dt_compat=config.dt_compat,
        task_limits=config.task_limits,
    )


@dataclass(frozen=True)
class _Pending:
    """One endpoint's requests not yet in its records, enumerated lazily from the plan (never a list). The run
    directory only resumes the same plan, so every finished key is one of the plan's: ``count`` is the difference.
    Where the plan's item ids are unique, a finished unit is passed over by its (task, item id, sample index),
    without building its request or its key: a resume of a million-request run reaches its first new request in
    seconds."""

    plan: Plan
    endpoint: str
    done: Finished
    count: int

    def __iter__(self) -> Iterator[tuple[Unit, str]]:
        by_unit = self.done.units if self.plan.unique_ids else {}
        for task, item in self.plan.iter_items():
            for sample in range(item.n):
                if (task.name, item.item_id, sample) in by_unit:
                    continue
                u = self.plan.unit(task, item, sample)
                key = record_key(self.endpoint, task.name, item.item_id, sample, u.request)
                if key not in self.done:
                    yield u, key

    def __len__(self) -> int:
        return self.count


def _api_key(spec: EndpointSpec) -> str | None:
    if spec.api_key_env is None:
        return None
    value = os.environ.get(spec.api_key_env)
    if not value:
        raise EndpointError(
            f"API key variable {spec.api_key_env} is not set (endpoint {spec.name or spec.url}); "
            "export it, or drop --api-key-env"
        )
    return value


async def _connect(spec: EndpointSpec, key: str | None) -> ProtocolClient:
    """Detect the protocol if not given, then probe; an unreachable or wrong endpoint is a one-line error."""
    provisional = spec.resolved(spec.protocol or "tgi")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with open_session(2, _PROBE_TIMEOUTS, headers) as session:
        protocol = spec.protocol or await detect_protocol(session, provisional)
        client = get_protocol(protocol)(spec.resolved(protocol), key)
        described = await client.probe(session)
    client.endpoint = client.endpoint.model_copy(update={"model": client.model})
    log.info("endpoint %s at %s: %s", client.endpoint.name, client.endpoint.url, described)
    return client


async def _connect_replicas(spec: EndpointSpec, key: str | None, client: ProtocolClient) -> tuple[ProtocolClient, ...]:
    """A client per replica URL, each probed like the endpoint itself; a replica serving another model is refused."""
    replicas = []
    for url in spec.replicas:
        # a spec made from a launched server's Endpoint (``base``) resolves to its base's URL: give each its own
        base = spec.base.model_copy(update={"url": url}) if spec.base is not None else None
        replica = await _connect(
            dataclasses.replace(spec, url=url, protocol=client.endpoint.protocol, replicas=(), base=base), key
        )
        if replica.model != client.model:
            raise ConfigError(
                f"endpoint {client.endpoint.name}: replica {url} serves {replica.model!r}, {client.endpoint.url} "
                f"serves {client.model!r}; replicas must serve the same checkpoint"
            )
        replica.endpoint = client.endpoint.model_copy(update={"url": replica.endpoint.url})
        replicas.append(replica)
    if replicas:
        log.info(
            "endpoint %s: %d servers, its requests spread over all of them", client.endpoint.name, len(replicas) + 1
        )
    return tuple(replicas)


def make_toxicity_scorer(config: EvaluateConfig, plan: Plan) -> ToxicityScorer | None:
    """The run's toxicity scorer, built (and checked: package, weights, key) before any request; ``None`` when no
    planned task needs one or ``--toxicity-scorer none``."""
    if config.toxicity_scorer == NO_SCORER or not any(task.needs_toxicity for task, _ in plan.scenarios):
        return None
    scorer = get_scorer(config.toxicity_scorer, dict(config.toxicity_options))
    log.info("toxicity scorer %s (%s)", scorer.name, scorer.version)
    return scorer


SUMMARY_FILE = "plan-summary.json"
"""In a run directory of a prompts-file plan: the plan's request count and fingerprint under its signature, so that
a rerun of a million-prompt run need not enumerate them again before its first request."""


def _prime_from_run_dir(plan: Plan, out: Path) -> str | None:
    """Take the plan's summary from ``out`` where it was stored under the same signature; the signature (or None)."""
    signature = plan.signature()
    if signature is None:
        return None
    try:
        stored = json.loads((out / SUMMARY_FILE).read_text())
        if stored["signature"] == signature:
            plan.prime((int(stored["total"]), int(stored["fingerprints"], 16), bool(stored["unique_ids"])))
            log.info("plan summary read from %s (unchanged prompts)", out / SUMMARY_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none, or unreadable: the plan is enumerated
    return signature


def _store_summary(plan: Plan, out: Path, signature: str | None) -> None:
    if signature is None:
        return
    total, fingerprints, unique = plan.summary()
    data = {"signature": signature, "total": total, "fingerprints": f"{fingerprints:032x}", "unique_ids": unique}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(data) + "\n")


async def evaluate_async(config: EvaluateConfig) -> RunSummary:
    plan = make_plan(config)
    signature = _prime_from_run_dir(plan, config.out)
    total = plan.total
    if not total:
        raise ConfigError(f"{plan.description} asks for no requests")
    log.info("%s: %d requests per endpoint; prompts: %s", plan.description, total, plan.prompt_format)
    detectors = extra_detectors(config)  # built before anything else: a classifier without weights stops here
    toxicity = make_toxicity_scorer(config, plan)
    pool = ThreadPoolExecutor(1, "refusal") if any(d.blocking for d in detectors) else None
    try:
        return await _evaluate_plan(config, plan, toxicity, _Judges(detectors, pool), signature)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if toxicity is not None:
            await toxicity.aclose()


def extra_detectors(config: EvaluateConfig) -> tuple[RefusalDetector, ...]:
    """The ``--refusal-detector`` detectors, built (a classifier loads its model here). ``broad`` judges every
    answer already, so asking for it adds nothing."""
    return tuple(get_detector(name) for name in config.refusal_detectors if name != "broad")


@dataclass(frozen=True)
class _Judges:
    detectors: tuple[RefusalDetector, ...]
    pool: Executor | None


async def _evaluate_plan(
    config: EvaluateConfig, plan: Plan, toxicity: ToxicityScorer | None, judges: _Judges, signature: str | None
) -> RunSummary:
    keys = [_api_key(spec) for spec in config.endpoints]
    clients = await asyncio.gather(*(_connect(spec, key) for spec, key in zip(config.endpoints, keys, strict=True)))
    replicas = [
        await _connect_replicas(spec, key, client)
        for spec, key, client in zip(config.endpoints, keys, clients, strict=True)
    ]
    names = [c.endpoint.name for c in clients]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoint names must be unique, got {', '.join(names)}; pass --name for each --endpoint")
    info = RunInfo(
        run_id=uuid.uuid4().hex[:12],
        plan_hash=plan.plan_hash(names),
        plan=plan.description,
        tasks=plan.tasks,
        endpoints=[c.endpoint for c in clients],
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        comptrust_version=__version__,
    )
    info, resumed = open_run_dir(config.out, info)
    _store_summary(plan, config.out, signature)
    with lock_run_dir(config.out, "evaluate"):  # from loading its records to compacting them
        return await _run_locked(
            config,
            clients=clients,
            replicas=replicas,
            keys=keys,
            plan=plan,
            info=info,
            resumed=resumed,
            toxicity=toxicity,
            judges=judges,
        )


async def _run_locked(
    config: EvaluateConfig,
    *,
    clients: list[ProtocolClient],
    replicas: list[tuple[ProtocolClient, ...]],
    keys: list[str | None],
    plan: Plan,
    info: RunInfo,
    resumed: bool,
    toxicity: ToxicityScorer | None,
    judges: _Judges,
) -> RunSummary:
    total = plan.total
    store = get_store("ndjson")
    reporter = make_reporter(config.progress, config.log_interval_s)
    jobs: list[EndpointJob] = []
    halt = RunHalt()
    try:
        for client, key, more in zip(clients, keys, replicas, strict=True):
            name = client.endpoint.name
            done = store.load(config.out, name, drop_errors=config.retry_errors)
            finished = len(done)
            pending = _Pending(plan, name, done, total - finished)
            log.info("endpoint %s: %d requests planned, %d already done", name, total, finished)
            reporter.add(name, total, finished)
            writer = store.writer(config.out, name)
            writer.on_failure = functools.partial(_halt_on_write_failure, halt, writer.path)
            if not parquet_path(config.out, name).exists():  # then the NDJSON file holds every finished record
                writer.existing_records = finished
            jobs.append(
                EndpointJob(
                    client.endpoint,
                    client,
                    pending,
                    writer,
                    secret=key,
                    toxicity=toxicity,
                    refusal=judges.detectors,
                    refusal_pool=judges.pool,
                    replicas=more,
                    halt=halt,
                )
            )
        space = SpaceWatch(config.out, [job.writer for job in jobs], sum(len(job.units) for job in jobs))
        first = next(plan.iter_items(), None)  # the plan's first request stands for the rest (no resume pass)
        space.check_before(plan.unit(first[0], first[1], 0) if first is not None else None)
        watching = asyncio.create_task(space.watch())
        async with reporter:
            try:
                await run_jobs(jobs, config.limits, config.timeouts, config.retry, reporter)
            finally:
                watching.cancel()
                for job in jobs:  # after a failed write, one last try for what it holds
                    job.writer.close()
                    reporter.unwritten(job.endpoint.name, *job.writer.held)  # before the last progress lines
    finally:
        for job in jobs:
            job.writer.close()
    failed = [job for job in jobs if job.writer.failure is not None]
    if failed:
        raise _not_written(config.out, failed, reporter)
    if config.compact:
        for client in clients:
            compact_endpoint(config.out, client.endpoint.name)
    summaries = []
    for client in clients:
        ep = reporter.endpoints[client.endpoint.name]
        summaries.append(
            EndpointSummary(
                name=ep.name,
                url=client.endpoint.url,
                protocol=client.name,
                total=ep.total,
                resumed=ep.resumed,
                ok=ep.ok,
                errors=ep.errors,
                refusals=ep.refusals,
                elapsed_s=ep.elapsed,
                retries=ep.retries,
                backoffs=ep.backoffs,
                final_limit=ep.limit,
                stopped=ep.stopped,
                left=ep.left,
                outages=ep.outages,
                retry_kinds=tuple(sorted(ep.retry_kinds.items())),
                error_kinds=tuple(sorted(ep.error_kinds.items())),
            )
        )
        log.info(
            "endpoint %s: %d ok, %d errors, %d refusals this run (%d resumed) in %.1fs, %.1f req/s",
            ep.name,
            ep.ok,
            ep.errors,
            ep.refusals,
            ep.resumed,
            ep.elapsed,
            summaries[-1].rate,
        )
    return RunSummary(config.out, info.run_id, info.plan, resumed, tuple(summaries))


def _halt_on_write_failure(halt: RunHalt, path: Path, exc: OSError) -> None:
    """A record file refused a write: the run stops sending (once), what is on the wire finishes into memory."""
    if halt.reason is None:
        log.error(
            "could not write records to %s ([Errno %s] %s): sending nothing more; the requests on the wire finish, "
            "then their records get one more try",
            path,
            exc.errno,
            exc.strerror or exc,
        )
    halt.stop(f"records could not be written to {path}")


def _not_written(run_dir: Path, failed: list[EndpointJob], reporter: ProgressReporter) -> RecordsNotWritten:
    """The one line a run that could not keep its records ends with: where, why, what is safe and what is not."""
    first = failed[0].writer
    assert first.failure is not None
    on_disk = sum(reporter.endpoints[j.endpoint.name].done for j in failed)
    lost = sum(sum(j.writer.held) for j in failed)
    left = sum(reporter.endpoints[j.endpoint.name].left for j in failed)
    counts = (
        f"{on_disk:,} records are whole on disk in {run_dir}, {lost:,} finished requests were lost with the failed "
        f"write, {left - lost:,} more were not sent"
    )
    error = storage_error(
        first.path,
        first.failure,
        "records",
        after="then rerun the same command: it keeps the records on disk and sends only what is missing",
    )
    head, _, todo = str(error).partition("; ")
    return RecordsNotWritten(f"{head}; {counts}; {todo}", path=str(first.path), code=error.errno)


def evaluate(config: EvaluateConfig) -> RunSummary:
    """Run ``config`` to completion (resuming its run directory if it holds the same plan)."""
    return asyncio.run(evaluate_async(config))
