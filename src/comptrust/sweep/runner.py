"""Drive compress → serve → evaluate → analyze through every cell of a plan, resumably, N servers at once.

Two phases. First every cell that still needs evaluating is compressed, one at a time on the study device (a
checkpoint whose manifest already matches the cell is kept). Then the compressed cells are served and evaluated by
one worker per GPU group (``[serve] gpus`` split into ``gpus_per_server``; one worker without GPUs): a worker starts
the cell's server on its group, evaluates it, stops it and takes the next cell. Analysis runs at the end over every
evaluated cell. A cell that fails at any stage is recorded in ``sweep-state.json`` with its stage and error, and the
rest go on. After a crash or Ctrl-C a rerun resumes: compressed checkpoints are kept, evaluation resumes from the
records already written, and servers are stopped on the way out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from comptrust_analysis import AnalysisConfig
from comptrust_analysis.report import Gate
from comptrust_core import MANIFEST_FILE, CheckpointError, read_manifest
from comptrust_core.storage import is_storage_error
from comptrust_serve import ServerHandle

from comptrust.sweep.cells import endpoint_of, launch_servers
from comptrust.sweep.disk import disk_estimate, warn_if_short
from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.stages import (
    Stages,
    check_launcher,
    compress_config,
    evaluate_config,
    expected_failure,
    real_stages,
    request_counts,
    require_match,
    require_method,
)
from comptrust.sweep.state import CellState, SweepState, load_state, save_state
from comptrust.sweep.store import StudyStore

__all__ = ["SweepResult", "needs_work", "run_sweep", "study_store"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    out: Path
    state: SweepState
    report: str
    failed: tuple[str, ...]
    gate: dict[str, object] | None = None
    """The ``[gate]`` verdict (``analysis/gate.json``), where the plan has one."""
    halted: str | None = None
    """Why the study stopped before its end: a write the disk refused (its cell's error); the other cells were not
    started, and no analysis was written."""


def _storage_halt(cell: Cell, stage: str, exc: BaseException) -> str | None:
    """The study's stop reason when ``exc`` is a write the disk refused (every other cell would hit it too)."""
    if not is_storage_error(exc):
        return None
    return f"[{cell.name}] {stage}: {exc}"


def _fail(cell: Cell, cs: CellState, stage: str, exc: Exception) -> None:
    cs.stage, cs.failed_stage = "failed", stage
    cs.error = str(exc) or exc.__class__.__name__
    if is_storage_error(exc):
        log.error(
            "[%s] %s failed: %s (the study stops: every other cell would hit it too)",
            cell.name,
            stage,
            cs.error,
        )
    elif expected_failure(exc):
        log.error("[%s] %s failed: %s (the rest of the grid goes on)", cell.name, stage, cs.error)
    else:  # not one of ours: keep the traceback in the log, the cell still fails alone
        log.exception("[%s] %s failed unexpectedly (the rest of the grid goes on)", cell.name, stage)


def _ensure_checkpoint(plan: Plan, cell: Cell, ckpt: Path, stages: Stages) -> float | None:
    """Make the cell's checkpoint unless a matching one is there; its measured compression time."""
    if (ckpt / MANIFEST_FILE).is_file():
        manifest = read_manifest(ckpt)
        require_match(manifest, cell, str(ckpt))
        log.info("[%s] checkpoint exists and matches the plan: %s", cell.name, ckpt)
        return manifest.measured.wall_time_s
    if ckpt.exists():
        raise CheckpointError(f"{ckpt} exists but holds no {MANIFEST_FILE}; remove it so the sweep can rebuild it")
    log.info("[%s] compressing %s with %s", cell.name, cell.model.source, cell.method)
    stages.compress(compress_config(plan, cell, ckpt))
    return read_manifest(ckpt).measured.wall_time_s


@dataclass(frozen=True)
class _Sweep:
    """One invocation's context: the plan, its output folder and state, and the stage calls."""

    plan: Plan
    out: Path
    state: SweepState
    stages: Stages
    halt: list[str] = field(default_factory=list)
    """Set (once) when a cell hit a write the disk refused: no other cell starts."""

    def save(self) -> None:
        try:
            save_state(self.out, self.state)
        except Exception as exc:  # the disk full: the study stops (the file on disk is still the last whole one)
            if not is_storage_error(exc):
                raise
            log.error("could not update %s/sweep-state.json: %s", self.out, exc)
            if not self.halt:
                self.halt.append(f"sweep-state.json: {exc}")

    def fail(self, cell: Cell, cs: CellState, stage: str, exc: Exception) -> None:
        _fail(cell, cs, stage, exc)
        reason = _storage_halt(cell, stage, exc)
        if reason is not None and not self.halt:
            self.halt.append(reason)


def _compress_all(sweep: _Sweep, cells: list[Cell]) -> list[Cell]:
    plan, state, out, stages, save = sweep.plan, sweep.state, sweep.out, sweep.stages, sweep.save
    known = stages.methods()
    ready: list[Cell] = []
    for cell in cells:
        if sweep.halt:
            break
        cs = state.cells[cell.name]
        try:
            require_method(cell, known)
            cs.compress_s = _ensure_checkpoint(plan, cell, out / "checkpoints" / cell.name, stages)
            cs.stage, cs.error, cs.failed_stage, cs.cell = "compressed", None, None, cell.model_dump_json()
            ready.append(cell)
        except Exception as exc:
            sweep.fail(cell, cs, "compress", exc)
        save()
    return ready


async def _launch_owned(
    stages: Stages, plan: Plan, cell: Cell, ckpt: Path, *, gpus: tuple[int, ...], log_dir: Path
) -> list[ServerHandle]:
    """Start the cell's servers (its ``replicas``) in a worker thread; if we are cancelled meanwhile, they are stopped
    once they are up."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, lambda: launch_servers(stages, plan, cell, ckpt, gpus=gpus, log_dir=log_dir))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:

        def stop_orphans(f: asyncio.Future[list[ServerHandle]]) -> None:
            if not f.cancelled() and f.exception() is None:
                for server in f.result():
                    server.stop()

        fut.add_done_callback(stop_orphans)
        raise


async def _serve_and_evaluate(sweep: _Sweep, cells: list[Cell]) -> None:
    plan, state, out, stages, save = sweep.plan, sweep.state, sweep.out, sweep.stages, sweep.save
    slots = plan.serve.slots()[: max(1, len(cells))]
    queue = deque(cells)
    fingerprint = plan.evaluate.request_fingerprint()
    progress: Literal["log", "auto"] = "log" if len(slots) > 1 else "auto"

    async def one(cell: Cell, gpus: tuple[int, ...]) -> None:
        cs = state.cells[cell.name]
        ckpt = out / "checkpoints" / cell.name
        stage = "serve"
        try:
            started = time.monotonic()
            servers = await _launch_owned(stages, plan, cell, ckpt, gpus=gpus, log_dir=out / "logs")
            try:
                cs.startup_s, cs.gpus = time.monotonic() - started, list(gpus)
                log.info(
                    "[%s] serving at %s on %s",
                    cell.name,
                    ", ".join(s.endpoint.url for s in servers),
                    f"GPUs {gpus}" if gpus else "CPU",
                )
                stage = "evaluate"
                run_dir = out / "runs" / cell.name
                _set_aside_if_superseded(run_dir, cs, fingerprint)
                cs.run_started_with = fingerprint
                save()
                config = evaluate_config(plan, run_dir, endpoint_of(servers), progress)
                summary = await stages.evaluate(config)
            finally:
                await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
            ep = summary.endpoints[0]
            if ep.stopped:  # its server stopped answering: the cell failed at evaluate, a rerun does what is left
                raise RuntimeError(f"the server stopped answering ({ep.stopped}); {ep.left} requests left")
            cs.ok, cs.errors = ep.resumed + ep.ok, ep.errors
            cs.requests, cs.evaluate_s = ep.ok + ep.errors, ep.elapsed_s
            cs.stage, cs.evaluated_with, cs.error, cs.failed_stage = "evaluated", fingerprint, None, None
            if cs.errors:
                log.warning(
                    "[%s] %d requests got no answer (they are in the run's records as errors, with their reason); "
                    "a rerun of the sweep retries them",
                    cell.name,
                    cs.errors,
                )
        except Exception as exc:
            sweep.fail(cell, cs, stage, exc)
        save()

    async def worker(gpus: tuple[int, ...]) -> None:
        while queue and not sweep.halt:
            await one(queue.popleft(), gpus)

    log.info("serving %d checkpoint(s), up to %d at once", len(cells), len(slots))
    await asyncio.gather(*(worker(gpus) for gpus in slots))


def _set_aside_if_superseded(run_dir: Path, cs: CellState, fingerprint: str) -> None:
    """A run folder started for other [evaluate] settings (the plan's tasks, limits or suite changed) cannot be
    resumed: it is renamed ``<cell>.superseded-<time>``, kept whole, and the cell is evaluated afresh."""
    started_with = cs.run_started_with or cs.evaluated_with
    if started_with is None or started_with == fingerprint or not run_dir.exists():
        return
    aside = run_dir.with_name(f"{run_dir.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(aside)
    log.warning(
        "%s was evaluated with other [evaluate] settings; kept as %s, evaluating afresh", run_dir.name, aside.name
    )


def needs_work(cell: Cell, cs: CellState, fingerprint: str) -> bool:
    """Whether the cell is not yet evaluated, cleanly, for these evaluate settings and this very cell."""
    done = cs.stage == "evaluated" and cs.errors == 0 and cs.evaluated_with == fingerprint
    return not (done and cs.cell in (None, cell.model_dump_json()))  # None: a state written before cells had one


def _warn_if_the_disk_is_short(sweep: _Sweep, todo: list[Cell]) -> None:
    """One line at start when the output folder will not hold what the cells still to do will write."""
    try:
        to_compress = [c for c in todo if not (sweep.out / "checkpoints" / c.name / MANIFEST_FILE).is_file()]
        requests = sum(request_counts(sweep.plan).values())
        warn_if_short(disk_estimate(sweep.plan, sweep.state, to_compress, len(todo), requests), sweep.out)
    except Exception as exc:  # the estimate is advice: one that cannot be made never stops a sweep
        log.debug("no disk estimate: %s", exc)


def run_sweep(
    plan: Plan,
    plan_file: Path,
    stages: Stages | None = None,
    *,
    executor: Literal["local", "ray"] | None = None,
    address: str | None = None,
) -> SweepResult:
    """Run (or resume) the whole plan: on this machine, or with ``executor="ray"`` (or ``[study] executor``) as Ray
    tasks on the cluster at ``address`` (or ``[ray] address``; none: a local Ray)."""
    stages = stages or real_stages()
    executor = executor or plan.study.executor
    out = plan.out_dir()
    cells = plan.cells()
    # a suite or data folder evaluate cannot use, or a launcher that cannot run here, is a plan error before any work
    request_counts(plan)
    if stages.check_launcher and executor == "local":  # on a cluster the workers' launcher is what counts
        check_launcher(plan)
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out, plan_file)
    fingerprint = plan.evaluate.request_fingerprint()
    for cell in cells:
        state.cells.setdefault(cell.name, CellState())
    sweep = _Sweep(plan, out, state, stages)
    if executor == "ray":
        run_dirs = _run_on_ray(sweep, cells, fingerprint, address or plan.ray.address)
    else:
        todo = [c for c in cells if needs_work(c, state.cells[c.name], fingerprint)]
        for cell in cells:
            if cell not in todo:
                log.info("[%s] already evaluated; skipping", cell.name)
        _warn_if_the_disk_is_short(sweep, todo)
        ready = _compress_all(sweep, todo)
        if ready and not sweep.halt:
            asyncio.run(_serve_and_evaluate(sweep, ready))
        run_dirs = tuple(out / "runs" / c.name for c in cells if state.cells[c.name].stage == "evaluated")
    report = ""
    gate: dict[str, object] | None = None
    if sweep.halt:  # the analysis would be written to the same disk, and would leave out the cells not done
        failed = tuple(c.name for c in cells if state.cells[c.name].stage == "failed")
        return SweepResult(out=out, state=state, report=report, failed=failed, halted=sweep.halt[0])
    if run_dirs:
        a = plan.analyze
        config = AnalysisConfig(
            run_dirs=run_dirs,
            out=out / "analysis",
            variant=a.variant,
            compare=a.compare,
            plots=a.plots,
            gate=Gate(plan.gate.max_drop) if plan.gate else None,
        )
        report = stages.analyze(config)
        if executor == "ray":
            from comptrust.sweep.ray_executor import upload_analysis

            upload_analysis(study_store(plan), out / "analysis")
        if plan.gate:
            gate = json.loads((out / "analysis" / "gate.json").read_text())
    failed = tuple(c.name for c in cells if state.cells[c.name].stage == "failed")
    return SweepResult(out=out, state=state, report=report, failed=failed, gate=gate)


def study_store(plan: Plan) -> StudyStore:
    """The ray executor's study store: ``[study] store``, or ``OUT/store`` (a path every node must share)."""
    return StudyStore(plan.study.store or str((plan.out_dir() / "store").resolve()))


def _run_on_ray(sweep: _Sweep, cells: list[Cell], fingerprint: str, address: str | None) -> tuple[Path, ...]:
    from comptrust.sweep.ray_executor import adopt_store_outcomes, connect, materialize_runs, run_cells

    plan, state = sweep.plan, sweep.state
    store = study_store(plan)
    adopt_store_outcomes(store, cells, state, fingerprint)
    sweep.save()
    todo = [c for c in cells if needs_work(c, state.cells[c.name], fingerprint)]
    for cell in cells:
        if cell not in todo:
            log.info("[%s] already evaluated; skipping", cell.name)
    if todo:
        connect(address)
        run_cells(plan, todo, state, save=sweep.save, stages=sweep.stages, store=store)
    evaluated = [c.name for c in cells if state.cells[c.name].stage == "evaluated"]
    return materialize_runs(store, sweep.out, evaluated)
