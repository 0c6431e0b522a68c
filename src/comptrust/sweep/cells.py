"""One cell of a cluster sweep, as a worker runs it: compress a checkpoint into the study store, or serve one from
the store and evaluate it with its records flushed to the store as they come.

Nothing here knows Ray: :mod:`comptrust.sweep.ray_executor` wraps these in Ray tasks, tests call them directly. A
cell returns its outcome as a plain dict (and, for serve+evaluate, writes it to the store last: the mark of a done
cell); a failure of the cell's own (a refused checkpoint, a server that will not start) is an outcome too, with
its stage and error, never an exception, so it fails alone. What kills the worker (its node lost) is not caught:
the executor reruns the cell, which resumes from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_core import MANIFEST_FILE, ConfigError, Manifest
from comptrust_core.storage import is_storage_error
from comptrust_evaluate import EndpointSpec, RunSummary
from comptrust_serve import ServerHandle

from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.stages import (
    Stages,
    compress_config,
    evaluate_config,
    expected_failure,
    launch_options,
    require_match,
    require_method,
)
from comptrust.sweep.store import RunSync, StoreRefused, StudyStore

__all__ = ["CellJob", "cell_cache", "compress_cell", "failure_outcome", "serve_evaluate_cell", "stored_checkpoint"]

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class CellJob:
    """What a worker needs for one cell: the plan (as JSON), the cell's name, the store, the requests it will get."""

    plan_json: str
    cell: str
    store_url: str
    requests: int = 0

    def plan(self) -> Plan:
        return Plan.model_validate_json(self.plan_json)

    def the_cell(self, plan: Plan) -> Cell:
        for cell in plan.cells():
            if cell.name == self.cell:
                return cell
        raise ConfigError(f"the plan has no cell {self.cell!r}")


def cell_cache() -> Path:
    """This node's own scratch folder for cells (``COMPTRUST_NODE_CACHE`` or the temp dir)."""
    root = Path(os.environ.get("COMPTRUST_NODE_CACHE") or Path(tempfile.gettempdir()) / "comptrust-cells")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _node() -> str:
    return os.environ.get("COMPTRUST_NODE_NAME") or socket.gethostname()


@contextlib.contextmanager
def _cell_log(path: Path) -> Iterator[None]:
    """Everything logged while the cell runs also goes to its own log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def failure_outcome(stage: str, exc: BaseException) -> dict[str, Any]:
    """A failed cell's outcome: its stage and error, where it ran, and whether this node's own disk refused a write."""
    error = str(exc) or exc.__class__.__name__
    if not expected_failure(exc):
        log.exception("%s failed unexpectedly", stage)
        error = f"{exc.__class__.__name__}: {error}"
    else:
        log.error("%s failed: %s", stage, error)
    # a write this node's own disk refused (not the study store's): another node may do the cell
    node_disk = is_storage_error(exc) and not isinstance(exc, StoreRefused)
    return {
        "ok": False,
        "stage": "failed",
        "failed_stage": stage,
        "error": error,
        "node": _node(),
        "node_disk_full": node_disk,
    }


def stored_checkpoint(store: StudyStore, cell: Cell) -> dict[str, Any] | None:
    """The compression outcome of the checkpoint the store holds for this very cell; None when it holds none (an
    upload cut short, without its manifest, counts as none). One made for another cell is refused, saying what
    differs."""
    text = store.read_text(f"checkpoints/{cell.name}/{MANIFEST_FILE}")
    if text is None:
        return None
    manifest = Manifest.model_validate_json(text)
    require_match(manifest, cell, f"{store.url}/checkpoints/{cell.name}")
    return {"ok": True, "stage": "compressed", "compress_s": manifest.measured.wall_time_s, "node": _node()}


def compress_cell(job: CellJob, stages: Stages) -> dict[str, Any]:
    """Make the cell's checkpoint in the store unless a matching one is there."""
    plan = job.plan()
    cell = job.the_cell(plan)
    store = StudyStore(job.store_url)
    cache = cell_cache()
    logs = cache / "logs" / f"{cell.name}-{uuid.uuid4().hex[:8]}"
    with _cell_log(logs / "compress.log"):
        try:
            outcome = _compress(plan, cell, store, stages, cache)
        except Exception as exc:
            outcome = failure_outcome("compress", exc)
    with contextlib.suppress(Exception):  # the log is a courtesy; the outcome is what counts
        store.put_logs(logs, cell.name)
    shutil.rmtree(logs, ignore_errors=True)
    return outcome


def _compress(plan: Plan, cell: Cell, store: StudyStore, stages: Stages, cache: Path) -> dict[str, Any]:
    require_method(cell, stages.methods(), f"on node {_node()}")
    made = stored_checkpoint(store, cell)
    if made is not None:
        log.info("[%s] checkpoint exists in the store and matches the plan", cell.name)
        return made
    started = time.monotonic()
    # a filesystem store takes the checkpoint in place (compress writes it atomically); any other gets it uploaded
    out = (
        store.local_path(f"checkpoints/{cell.name}")
        if store.is_local
        else cache / "compress" / f"{cell.name}-{uuid.uuid4().hex[:8]}"
    )
    if store.is_local and out.exists():  # no manifest: an upload cut short, remade whole
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        log.info("[%s] compressing %s with %s on %s", cell.name, cell.model.source, cell.method, _node())
        stages.compress(compress_config(plan, cell, out))
        store.put_checkpoint(out, cell.name)  # nothing to do where the store's own folder was written
    finally:
        if not store.is_local:
            shutil.rmtree(out, ignore_errors=True)
    made = stored_checkpoint(store, cell)
    assert made is not None, "a checkpoint just made is in the store"
    log.info("[%s] compressed in %.0fs, in the store", cell.name, time.monotonic() - started)
    return made


def launch_servers(
    stages: Stages, plan: Plan, cell: Cell, ckpt: Path, *, gpus: tuple[int, ...], log_dir: Path
) -> list[ServerHandle]:
    """The cell's ``replicas`` servers, started at once, each on its own GPU group; all stopped if one fails."""
    groups = plan.serve.server_groups(gpus)
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [
            pool.submit(stages.launch, ckpt, plan.serve.launcher, launch_options(plan, cell, g, log_dir))
            for g in groups
        ]
        servers, errors = [], []
        for f in futures:
            try:
                servers.append(f.result())
            except BaseException as exc:
                errors.append(exc)
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]
    return servers


def endpoint_of(servers: list[ServerHandle]) -> EndpointSpec:
    """One logical endpoint: the first server, the others its replicas."""
    spec = EndpointSpec.from_endpoint(servers[0].endpoint)
    return dataclasses.replace(spec, replicas=tuple(s.endpoint.url for s in servers[1:]))


def serve_evaluate_cell(
    job: CellJob, stages: Stages, gpus: tuple[int, ...] = (), report: Report | None = None
) -> dict[str, Any]:
    """Serve the cell's checkpoint from the store and evaluate it, resuming from the records the store holds."""
    plan = job.plan()
    cell = job.the_cell(plan)
    store = StudyStore(job.store_url)
    cache = cell_cache()
    attempt = uuid.uuid4().hex[:8]
    logs = cache / "logs" / f"{cell.name}-{attempt}"
    run_local = cache / "runs" / f"{cell.name}-{attempt}"
    with _cell_log(logs / "cell.log"):
        try:
            outcome = _serve_evaluate(
                job,
                plan,
                cell,
                store,
                stages=stages,
                gpus=gpus,
                report=report,
                cache=cache,
                run_local=run_local,
                logs=logs,
            )
        except Exception as exc:
            outcome = failure_outcome(_stage_of(exc), exc.cause if isinstance(exc, _StageError) else exc)
            with contextlib.suppress(Exception):
                store.write_cell_outcome(cell.name, outcome)
    with contextlib.suppress(Exception):
        store.put_logs(logs, cell.name)
    shutil.rmtree(logs, ignore_errors=True)
    shutil.rmtree(run_local, ignore_errors=True)
    return outcome


async def _awaited(awaitable: Awaitable[RunSummary]) -> RunSummary:
    return await awaitable


class _StageError(Exception):
    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(str(exc) or exc.__class__.__name__)
        self.stage, self.cause = stage, exc


def _stage_of(exc: BaseException) -> str:
    return exc.stage if isinstance(exc, _StageError) else "evaluate"


def _serve_evaluate(
    job: CellJob,
    plan: Plan,
    cell: Cell,
    store: StudyStore,
    *,
    stages: Stages,
    gpus: tuple[int, ...],
    report: Report | None,
    cache: Path,
    run_local: Path,
    logs: Path,
) -> dict[str, Any]:
    node = _node()
    fingerprint = plan.evaluate.request_fingerprint()
    _set_aside_if_superseded(store, cell.name, fingerprint)
    started = time.monotonic()
    last_report = [0.0]

    def progress(done: int, stage: str = "evaluate") -> None:
        if report is None:
            return
        now = time.monotonic()
        if stage == "evaluate" and now - last_report[0] < 1.0:
            return
        last_report[0] = now
        report({"cell": cell.name, "stage": stage, "done": done, "total": job.requests, "node": node, "gpus": gpus})

    r = plan.ray
    sync = RunSync(
        store,
        cell.name,
        run_local,
        every_records=r.flush_records,
        every_s=r.flush_seconds,
        on_progress=progress,
        node=node,
    )
    resumed = sync.restore()
    store.write_text(f"runs/{cell.name}.started", fingerprint + "\n")
    progress(resumed, "serve")
    try:
        ckpt = store.checkpoint_dir(cell.name, cache)
        servers = launch_servers(stages, plan, cell, ckpt, gpus=gpus, log_dir=logs)
    except Exception as exc:
        raise _StageError("serve", exc) from exc
    startup_s = time.monotonic() - started
    log.info(
        "[%s] %d server(s) up on %s (%s) in %.0fs; %d records already in the store",
        cell.name,
        len(servers),
        node,
        f"GPUs {gpus}" if gpus else "no GPU",
        startup_s,
        resumed,
    )
    sync.start()
    try:
        config = evaluate_config(plan, run_local, endpoint_of(servers), progress="off")
        summary = asyncio.run(_awaited(stages.evaluate(config)))
    finally:
        sync.stop()
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
    sync.finish()
    ep = summary.endpoints[0]
    if ep.stopped:
        raise RuntimeError(f"the server stopped answering ({ep.stopped}); {ep.left} requests left")
    outcome = {
        "ok": True,
        "stage": "evaluated",
        "node": node,
        "gpus": list(gpus),
        "ok_requests": ep.resumed + ep.ok,
        "errors": ep.errors,
        "requests": ep.ok + ep.errors,
        "resumed": ep.resumed,
        "evaluate_s": ep.elapsed_s,
        "startup_s": startup_s,
        "evaluated_with": fingerprint,
        "cell": cell.model_dump_json(),
        "finished_at": time.time(),
    }
    store.write_cell_outcome(cell.name, outcome)  # last: the cell is done
    progress(sync.local_lines(), "done")
    return outcome


def _set_aside_if_superseded(store: StudyStore, cell: str, fingerprint: str) -> None:
    """Records started for other [evaluate] settings cannot be resumed: they move to ``superseded/`` whole."""
    started = store.read_text(f"runs/{cell}.started")
    if started is None or started.strip() == fingerprint or not store.exists(f"runs/{cell}"):
        return
    aside = f"superseded/{cell}-{time.strftime('%Y%m%d-%H%M%S')}"
    store.fs.mv(store.path(f"runs/{cell}"), store.path(aside), recursive=True)
    store.clear_cell_outcome(cell)
    log.warning(
        "%s was evaluated with other [evaluate] settings; kept as %s in the store; evaluating afresh", cell, aside
    )
