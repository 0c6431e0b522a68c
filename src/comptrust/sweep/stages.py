"""What one cell's stages are made of: the library calls of compress, serve, evaluate and analyze, and the typed
configs the plan turns into for them.

:class:`Stages` bundles the four calls so that tests (and other front ends) can swap them for fakes; the runner only
ever calls these.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from comptrust_analysis import AnalysisConfig, analyze, render_text
from comptrust_compress import CompressConfig, compress, method_names
from comptrust_core import CheckpointError, ConfigError, Manifest
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RunSummary, evaluate_async, make_plan
from comptrust_serve import LaunchOptions, ServerHandle, launch_checkpoint, open_checkpoint, resolve_launcher

from comptrust.sweep.plan import Cell, Plan

__all__ = [
    "Stages",
    "check_launcher",
    "compress_config",
    "evaluate_config",
    "expected_failure",
    "launch_options",
    "manifest_mismatch",
    "real_stages",
    "request_counts",
    "require_match",
    "require_method",
]


@dataclass(frozen=True)
class Stages:
    """The library calls a sweep makes; :func:`real_stages` gives the real ones."""

    compress: Callable[[CompressConfig], Path]
    launch: Callable[[Path, str, LaunchOptions], ServerHandle]
    evaluate: Callable[[EvaluateConfig], Awaitable[RunSummary]]
    analyze: Callable[[AnalysisConfig], str]
    """Analyze the runs and return the terminal report."""
    methods: Callable[[], list[str]]
    """The compression method names registered in this installation."""
    check_launcher: bool = True
    """Check before any work that the plan's launcher can run here (off for fake launchers)."""


def _launch(checkpoint_dir: Path, launcher: str, options: LaunchOptions) -> ServerHandle:
    return launch_checkpoint(open_checkpoint(checkpoint_dir), launcher, options)


def _analyze(config: AnalysisConfig) -> str:
    result = analyze(config)
    return render_text(result.scores, result.seeds, result.paper, deltas=result.deltas, correction=config.correction)


def real_stages() -> Stages:
    return Stages(compress=compress, launch=_launch, evaluate=evaluate_async, analyze=_analyze, methods=method_names)


def check_launcher(plan: Plan) -> None:
    """A launcher that is unknown here or cannot run here (no Docker engine, ...) is a plan error before any work."""
    try:
        resolve_launcher(plan.serve.launcher)
    except ConfigError as exc:
        raise ConfigError(f"plan: serve.launcher = {plan.serve.launcher!r}: {exc}") from None


def compress_config(plan: Plan, cell: Cell, out: Path) -> CompressConfig:
    return CompressConfig(
        model=cell.model.source,
        method=cell.method,
        out=out,
        name=cell.name,
        bits=cell.bits,
        group_size=cell.group_size,
        act_order=cell.act_order,
        sparsity=cell.sparsity,
        pattern=cell.pattern,  # type: ignore[arg-type]  # checked against compress's Pattern when the plan was read
        calib_data=cell.calib_data,
        calib_samples=cell.calib_samples,
        calib_seqlen=cell.calib_seqlen,
        calib_seed=cell.calib_seed,
        export=cell.export,  # type: ignore[arg-type]  # a Literal of the plan schema
        device=plan.study.device,
        trust_remote_code=cell.model.trust_remote_code,
    )


def require_method(cell: Cell, registered: list[str], where: str = "in this installation") -> None:
    """A cell whose method is not registered ``where`` fails at compress (a plan may name methods another install
    has)."""
    if cell.method not in registered:
        raise ConfigError(
            f"plan error: method {cell.method!r} is not registered {where} "
            f"(registered: {', '.join(sorted(registered))}); install the comptrust-compress that has it (the same on "
            "every node of a cluster), or remove it from the plan"
        )


def require_match(manifest: Manifest, cell: Cell, where: str) -> None:
    """An existing checkpoint (at ``where``) made for another cell is never overwritten: that cell fails, saying
    what differs."""
    diffs = manifest_mismatch(manifest, cell)
    if diffs:
        raise CheckpointError(
            f"{where} holds a different checkpoint ({'; '.join(diffs)}); move it away or change the study name"
        )


def expected_failure(exc: BaseException) -> bool:
    """Whether a stage's error is one of ours (a clear message is enough) rather than a bug (keep its traceback)."""
    return isinstance(exc, ConfigError | CheckpointError) or hasattr(exc, "exit_code")


def manifest_mismatch(manifest: Manifest, cell: Cell) -> list[str]:
    """How an existing checkpoint's manifest differs from what the cell asks (empty: it is the cell's checkpoint).

    Only what the cell states is compared; a calibration source matches when the manifest's names it (the manifest
    may spell it out, e.g. a dataset id with its split)."""
    diffs: list[str] = []

    def differ(what: str, asked: object, found: object) -> None:
        if asked is not None and asked != found:
            diffs.append(f"{what} {found!r} (the plan asks {asked!r})")

    differ("base model", cell.model.source, manifest.base_model.source)
    m = manifest.method
    differ("method", cell.method, m.name)
    for field in ("bits", "group_size", "act_order", "pattern", "export"):
        differ(field, getattr(cell, field), getattr(m, field))
    if cell.sparsity is not None and (m.sparsity is None or not math.isclose(m.sparsity, cell.sparsity)):
        diffs.append(f"sparsity {m.sparsity!r} (the plan asks {cell.sparsity!r})")
    calib = manifest.calibration
    asked_calib = (cell.calib_data, cell.calib_samples, cell.calib_seqlen, cell.calib_seed)
    if calib is None:
        if any(v is not None for v in asked_calib):
            diffs.append("no calibration (the plan asks for calibration settings)")
        return diffs
    if cell.calib_data is not None and cell.calib_data not in calib.source:
        diffs.append(f"calibration source {calib.source!r} (the plan asks {cell.calib_data!r})")
    differ("calibration samples", cell.calib_samples, calib.samples)
    differ("calibration seqlen", cell.calib_seqlen, calib.seqlen)
    differ("calibration seed", cell.calib_seed, calib.seed)
    return diffs


def launch_options(plan: Plan, cell: Cell, gpus: tuple[int, ...], log_dir: Path) -> LaunchOptions:
    s = plan.serve
    optional: dict[str, Any] = {
        k: v
        for k, v in {
            "max_batch": s.max_batch,
            "max_total_tokens": s.max_total_tokens,
            "max_input_tokens": s.max_input_tokens,
            "shm_size": s.shm_size,
        }.items()
        if v is not None
    }
    if gpus and s.launcher == "embedded":
        # the embedded server is a child process on this machine: pin it to its group (the same value the launcher
        # derives from ``gpus`` where it places servers itself; a container must not get it, its GPUs are renumbered)
        optional["env"] = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    return LaunchOptions(
        dtype=s.dtype,
        device=plan.study.device,
        trust_remote_code=cell.model.trust_remote_code,
        startup_timeout_s=s.startup_timeout_s,
        log_dir=log_dir,
        engine=s.engine,
        image=s.image,
        gpus=gpus,
        num_shard=len(gpus) if len(gpus) > 1 else None,
        extra_args=tuple(s.engine_args),
        engine_command=tuple(s.engine_command) if s.engine_command else None,
        **optional,
    )


def evaluate_config(
    plan: Plan,
    out: Path,
    endpoint: EndpointSpec,
    progress: Literal["auto", "bar", "log", "off"] = "auto",
    retry_errors: bool = True,
) -> EvaluateConfig:
    ev = plan.evaluate
    return EvaluateConfig(
        out=out,
        endpoints=(endpoint,),
        suite=ev.suite,
        tasks=tuple(ev.tasks or ()),
        data_dir=Path(ev.data_dir) if ev.data_dir else None,
        max_concurrency=ev.max_concurrency,
        rps=ev.rps,
        limit=ev.limit,
        task_limits=tuple(sorted(ev.limits.items())),
        sample=ev.sample,
        sample_seed=0 if ev.sample_seed is None else ev.sample_seed,
        dt_compat=ev.dt_compat,
        toxicity_scorer=ev.toxicity_scorer,
        toxicity_options=tuple((k, str(v)) for k, v in sorted(ev.toxicity_options.items())),
        refusal_detectors=tuple(dict.fromkeys(ev.refusal_detectors)),
        retry_errors=retry_errors,
        progress=progress,
    )


def request_counts(plan: Plan) -> dict[str, int]:
    """Requests per task that one checkpoint will get, from evaluate's own plan (no endpoint is contacted)."""
    config = evaluate_config(plan, Path("unused"), EndpointSpec(url="http://127.0.0.1:1", name="dry-run"))
    counts: dict[str, int] = {}
    for task, item in make_plan(config).iter_items():  # items times their samples, building no request
        counts[task.name] = counts.get(task.name, 0) + item.n
    return counts
