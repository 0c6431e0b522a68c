"""Drive compress → serve → evaluate → analyze through every cell of a plan, resumably."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from comptrust_analysis import AnalysisConfig, analyze, render_text
from comptrust_compress import CompressConfig, compress
from comptrust_core import MANIFEST_FILE, CheckpointError, ComptrustError, Manifest, read_manifest
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate
from comptrust_serve import launch

from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.state import CellState, SweepState, load_state, save_state

__all__ = ["SweepResult", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    out: Path
    state: SweepState
    report: str
    failed: tuple[str, ...]


def _compress_config(plan: Plan, cell: Cell, out: Path) -> CompressConfig:
    return CompressConfig(
        model=cell.model.source,
        method=cell.method,
        out=out,
        name=cell.name,
        bits=cell.bits,
        group_size=cell.group_size,
        act_order=cell.act_order,
        sparsity=cell.sparsity,
        pattern=cell.pattern,  # type: ignore[arg-type]
        calib_data=cell.calib_data,
        calib_samples=cell.calib_samples,
        calib_seqlen=cell.calib_seqlen,
        calib_seed=cell.calib_seed,
        export=cell.export,  # type: ignore[arg-type]
        device=plan.study.device,
    )


def _matches(manifest: Manifest, cell: Cell) -> bool:
    """Does an existing checkpoint already hold what this cell asks for?"""
    m = manifest.method
    asked = {
        "bits": cell.bits,
        "group_size": cell.group_size,
        "act_order": cell.act_order,
        "pattern": cell.pattern,
        "sparsity": cell.sparsity,
    }
    for field, value in asked.items():
        if value is not None and getattr(m, field) != value:
            return False
    seed = manifest.calibration.seed if manifest.calibration else None
    return (
        m.name == cell.method
        and manifest.base_model.source == cell.model.source
        and (cell.calib_seed is None or seed == cell.calib_seed)
    )


def _ensure_checkpoint(plan: Plan, cell: Cell, ckpt: Path) -> None:
    if (ckpt / MANIFEST_FILE).is_file():
        manifest = read_manifest(ckpt)
        if _matches(manifest, cell):
            log.info("[%s] checkpoint exists and matches the plan: %s", cell.name, ckpt)
            return
        raise CheckpointError(
            f"{ckpt} holds a different checkpoint ({manifest.method.name}); move it away or change the study name"
        )
    if ckpt.exists():
        raise CheckpointError(f"{ckpt} exists but holds no {MANIFEST_FILE}; remove it so the sweep can rebuild it")
    log.info("[%s] compressing %s with %s", cell.name, cell.model.source, cell.method)
    compress(_compress_config(plan, cell, ckpt))


def _evaluate_cell(plan: Plan, cell: Cell, ckpt: Path, run_dir: Path, logs: Path) -> tuple[int, int]:
    started = time.monotonic()
    with launch(
        ckpt,
        launcher=plan.serve.launcher,
        device=plan.study.device,
        dtype=plan.serve.dtype,
        max_batch=plan.serve.max_batch or 32,
        startup_timeout_s=plan.serve.startup_timeout_s,
        log_dir=logs,
    ) as server:
        log.info("[%s] serving at %s (%.1fs to healthy)", cell.name, server.endpoint.url, time.monotonic() - started)
        summary = evaluate(
            EvaluateConfig(
                out=run_dir,
                endpoints=(EndpointSpec.from_endpoint(server.endpoint),),
                suite=plan.evaluate.suite,
                max_concurrency=plan.evaluate.max_concurrency,
                limit=plan.evaluate.limit,
                retry_errors=True,
            )
        )
    ep = summary.endpoints[0]
    return ep.resumed + ep.ok, ep.errors


def run_sweep(plan: Plan, plan_file: Path) -> SweepResult:
    out = plan.out_dir()
    cells = plan.cells()
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out, plan_file)
    evaluated_with = plan.evaluate.model_dump_json()
    for cell in cells:
        cs = state.cells.setdefault(cell.name, CellState())
        if cs.stage == "evaluated" and cs.errors == 0 and cs.evaluated_with == evaluated_with:
            log.info("[%s] already evaluated; skipping", cell.name)
            continue
        ckpt = out / "checkpoints" / cell.name
        run_dir = out / "runs" / cell.name
        stage = "compress"
        try:
            _ensure_checkpoint(plan, cell, ckpt)
            cs.stage, cs.error, cs.failed_stage = "compressed", None, None
            save_state(out, state)
            stage = "serve/evaluate"
            cs.ok, cs.errors = _evaluate_cell(plan, cell, ckpt, run_dir, out / "logs")
            cs.stage, cs.evaluated_with = "evaluated", evaluated_with
            if cs.errors:
                log.warning("[%s] %d requests ended as errors; rerun the sweep to retry them", cell.name, cs.errors)
        except ComptrustError as exc:
            cs.stage, cs.error, cs.failed_stage = "failed", str(exc), stage
            log.error("[%s] %s failed: %s (the rest of the grid goes on)", cell.name, stage, exc)
        save_state(out, state)
    run_dirs = tuple(out / "runs" / c.name for c in cells if state.cells[c.name].stage == "evaluated")
    report = ""
    if run_dirs:
        result = analyze(AnalysisConfig(run_dirs=run_dirs, out=out / "analysis", variant=plan.analyze.variant))
        report = render_text(result.scores, result.seeds)
    failed = tuple(c.name for c in cells if state.cells[c.name].stage == "failed")
    return SweepResult(out=out, state=state, report=report, failed=failed)
