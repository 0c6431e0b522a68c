"""``sweep --dry-run``: the checkpoints a plan yields, the requests each gets, and how long the rest should take.

Every number says where it comes from. Measured: compression wall time from the manifests of checkpoints this sweep
already made (same base model and method), request throughput from the records of earlier runs in this sweep's
``runs/`` (requests over the span from the first request's start to the last one's end), and server start-up time
from ``sweep-state.json``. Assumed, where nothing is measured yet: the :data:`DEFAULTS` below, per study device.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from comptrust_analysis.power import ALPHA, POWER, Detectable, detectable_drops
from comptrust_core import MANIFEST_FILE, ComptrustError, read_manifest
from comptrust_core.cpu_dtype import DtypeChoice, choose_cpu_dtype
from comptrust_evaluate import get_task, read_records, task_names

from comptrust.sweep.disk import DiskEstimate, disk_estimate
from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.ray_executor import ClusterShape, cell_resources
from comptrust.sweep.runner import needs_work
from comptrust.sweep.stages import check_launcher, request_counts
from comptrust.sweep.state import CellState, SweepState

log = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "Assumptions", "Estimate", "estimate", "format_estimate"]


@dataclass(frozen=True)
class Assumptions:
    compress_s: dict[str, float]
    """Seconds to compress one checkpoint, per method (``*``: any other)."""
    startup_s: float
    """Seconds from launch to a healthy server."""
    requests_per_s: dict[str, float]
    """Requests answered per second by one server, per method of the checkpoint it serves (``*``: any other)."""

    def compress(self, method: str) -> float:
        return self.compress_s.get(method, self.compress_s["*"])

    def rate(self, method: str) -> float:
        return self.requests_per_s.get(method, self.requests_per_s["*"])


VLLM_CPU_STARTUP_S = 125.0
"""vLLM's CPU build, from launch to healthy, SmolLM2-135M on the project's 2-core machine (2026-12-06: 125 s, measured
by benchmarks/vllm_kinds.py; it compiles at start-up): assumed for a CPU plan served by vLLM until one is measured."""

DEFAULTS: dict[str, Assumptions] = {
    # SmolLM2-135M on the CPU, the embedded server (float32: what `auto` picks on a CPU without fast bfloat16), the
    # quick suite at 16 in flight: examples/quickstart.toml from a fresh clone with an empty comptrust cache on
    # 2026-12-07, on CPU B (the README's "Where the numbers come from": an Ice Lake Xeon, 2 cores, AVX-512 without
    # bfloat16 hardware, the common kind), idle: 12m20s in all. Each figure is that run's own (compress: from one
    # "compressing" line to the next, dense including the one-off GGUF conversion, 40 s; startup: launch to healthy;
    # 52 requests over the evaluate time). Compression includes loading the model and two perplexity passes; AWQ's
    # grid search dominates it. CPU A (with bfloat16 hardware) ran the same plan in 6m30s on 2026-11-23, every stage
    # about 2x faster; a machine shared with other work runs every stage 2.5-3x slower.
    "cpu": Assumptions(
        compress_s={
            "dense": 54.0,
            "gptq": 68.0,
            "awq": 111.0,
            "magnitude": 13.0,
            "sparsegpt": 56.0,
            "wanda": 22.0,
            "*": 60.0,
        },
        startup_s=22.0,
        requests_per_s={
            "dense": 1.3,
            "gptq": 1.0,
            "awq": 0.9,
            "magnitude": 1.3,
            "sparsegpt": 1.8,
            "wanda": 1.6,
            "*": 1.2,
        },
    ),
    # A 13B model on one H100-class GPU with TGI (the paper plan): not measured by comptrust; order-of-magnitude
    # figures (loading and saving 26 GB of weights, 128 x 2048 calibration tokens), replaced by measurements as soon
    # as this sweep has made checkpoints and runs.
    "cuda": Assumptions(
        compress_s={"dense": 300.0, "magnitude": 600.0, "wanda": 900.0, "*": 1800.0},
        startup_s=240.0,
        requests_per_s={"*": 20.0},
    ),
}


@dataclass
class Estimate:
    cells: list[Cell]
    stages: dict[str, str]
    requests: dict[str, int] | None
    requests_error: str | None
    compress_s: dict[str, tuple[float, bool]]
    """Remaining compression time per cell still to compress: (seconds, measured?)."""
    evaluate_s: float
    requests_per_s: tuple[float, str | None]
    """(rate, how it was measured), or, when nothing is measured yet, (the assumed rate of the first checkpoint to
    evaluate, None); :attr:`rates` holds the rate used for each checkpoint."""
    rates: dict[str, float]
    """Requests per second per server used for each checkpoint still to evaluate."""
    startup_s: tuple[float, bool]
    slots: list[tuple[int, ...]]
    to_evaluate: list[str]
    notes: list[str] = field(default_factory=list)
    power: list[Detectable] = field(default_factory=list)
    family: int = 1
    """How many pooled deltas the study's verdicts correct over (the power line's level)."""
    """Per perspective, the smallest drop against the dense base the plan's requests can detect."""
    per_cell_s: dict[str, float] = field(default_factory=dict)
    """Estimated start-up plus evaluation seconds of each checkpoint still to evaluate."""
    compress_slots: int = 1
    """Compressions at once (1 on this machine; what the cluster holds with the ray executor)."""
    serve_slots: int = 1
    """Checkpoints served at once."""
    cluster: str | None = None
    disk: DiskEstimate | None = None
    """What is still to write under the output folder, and the space there (None where it could not be told)."""
    serving_dtype: DtypeChoice | None = None
    """On a CPU plan served by the embedded server or vLLM: what a bfloat16 checkpoint (what compress writes) is
    computed in on this CPU, and why."""
    """The Ray cluster the estimate is for (None: this machine)."""

    @property
    def compress_total_s(self) -> float:
        return _makespan([s for s, _ in self.compress_s.values()], self.compress_slots)

    @property
    def total_s(self) -> float:
        return self.compress_total_s + self.evaluate_s


def _parse_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def _measured_rate(runs: Path) -> tuple[float, str] | None:
    total, span, n_runs = 0, 0.0, 0
    for path in sorted(runs.glob("*/records/*.ndjson")):
        records = read_records(path)
        if not records:
            continue
        starts = [_parse_time(r.finished_at) - timedelta(seconds=r.latency_s) for r in records]
        ends = [_parse_time(r.finished_at) for r in records]
        seconds = (max(ends) - min(starts)).total_seconds()
        if seconds > 0:
            total, span, n_runs = total + len(records), span + seconds, n_runs + 1
    if not n_runs:
        return None
    return total / span, f"measured over {n_runs} earlier run(s), {total} requests"


def _measured_compress(checkpoints: Path) -> dict[tuple[str, str], list[float]]:
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for manifest_file in sorted(checkpoints.glob(f"*/{MANIFEST_FILE}")):
        try:
            m = read_manifest(manifest_file.parent)
        except ComptrustError:
            continue
        found[(m.base_model.source, m.method.name)].append(m.measured.wall_time_s)
    return found


def _makespan(jobs: list[float], slots: int) -> float:
    """Longest-first onto the least-loaded slot: when the last of ``jobs`` ends on ``slots`` parallel workers."""
    loads = [0.0] * max(1, slots)
    for job in sorted(jobs, reverse=True):
        loads[loads.index(min(loads))] += job
    return max(loads)


def estimate(plan: Plan, state: SweepState, registered: list[str], cluster: ClusterShape | None = None) -> Estimate:
    """The dry run's numbers; with ``cluster`` (a Ray cluster's nodes), for the cells it holds at once."""
    out = plan.out_dir()
    cells = plan.cells()
    assumed = DEFAULTS[plan.study.device]
    notes: list[str] = []
    missing = sorted({c.method for c in cells} - set(registered))
    for method in missing:
        n = sum(c.method == method for c in cells)
        notes.append(
            f"method {method!r} is not registered in this installation (registered: {', '.join(registered)}): "
            f"its {n} checkpoint(s) will fail at compress until it is"
        )
    if plan.evaluate.tasks:
        unknown = sorted(set(plan.evaluate.tasks) - set(task_names()))
        if unknown:
            notes.append(f"evaluate.tasks names {', '.join(unknown)}, which this installation's evaluate lacks")
    requests: dict[str, int] | None = None
    requests_error = None
    try:
        requests = request_counts(plan)
    except Exception as exc:  # a dry run reports what it cannot count (a suite or its data missing here)
        requests_error = str(exc) if isinstance(exc, ComptrustError) else f"{type(exc).__name__}: {exc}"
    try:
        check_launcher(plan)
    except ComptrustError as exc:
        notes.append(f"{exc}; no checkpoint can be served until it can")
    stages: dict[str, str] = {c.name: state.cells[c.name].stage for c in cells if c.name in state.cells}
    stages.update({c.name: "pending" for c in cells if c.name not in stages})
    fingerprint = plan.evaluate.request_fingerprint()
    to_evaluate = [c.name for c in cells if needs_work(c, state.cells.get(c.name, CellState()), fingerprint)]
    measured = _measured_compress(out / "checkpoints")
    compress_s: dict[str, tuple[float, bool]] = {}
    for c in cells:
        if c.name in to_evaluate and not (out / "checkpoints" / c.name / MANIFEST_FILE).is_file():
            times = measured.get((c.model.source, c.method))
            if times:
                compress_s[c.name] = (statistics.fmean(times), True)
            else:
                compress_s[c.name] = (assumed.compress(c.method), False)
    measured_rate = _measured_rate(out / "runs")
    method_of = {c.name: c.method for c in cells}
    rates = {n: measured_rate[0] if measured_rate else assumed.rate(method_of[n]) for n in to_evaluate}
    requests_per_s: tuple[float, str | None] = (
        measured_rate if measured_rate else (assumed.rate(method_of[to_evaluate[0]] if to_evaluate else "*"), None)
    )
    startups = [cs.startup_s for cs in state.cells.values() if cs.startup_s is not None]
    assumed_startup = assumed.startup_s
    if plan.study.device == "cpu" and plan.serve.launcher in ("process", "docker") and plan.serve.engine == "vllm":
        assumed_startup = VLLM_CPU_STARTUP_S
    startup = (statistics.fmean(startups), True) if startups else (assumed_startup, False)
    n_requests = sum(requests.values()) if requests else 0
    replicas = plan.serve.replicas  # one checkpoint's requests spread over its servers
    per_cell = {n: startup[0] + (n_requests / (rates[n] * replicas) if requests else 0.0) for n in to_evaluate}
    slots = plan.serve.slots()
    compress_slots, serve_slots = 1, len(slots)
    if cluster is not None:
        compress_res, serve_res = cell_resources(plan)
        compress_slots, serve_slots = cluster.slots(compress_res), cluster.slots(serve_res)
        if not serve_slots or not compress_slots:
            notes.append(
                "no node of the cluster holds a "
                + ("serve+evaluate" if not serve_slots else "compression")
                + " cell as [ray] asks; the cells would wait for one"
            )
    per_perspective = _per_perspective(requests) if requests else {}
    # the pooled deltas the verdicts correct over: compressed configurations (seeds pooled) x perspectives
    family = max(1, len({_config_of(c) for c in cells if c.method != "dense"}) * len(per_perspective))
    power = detectable_drops(per_perspective, _dense_scores(out), family=family) if requests else []
    disk: DiskEstimate | None = None
    try:
        to_compress = [c for c in cells if c.name in compress_s]
        disk = disk_estimate(plan, state, to_compress, len(to_evaluate), n_requests)
    except Exception as exc:  # an estimate that cannot be made is left out, never a failed dry run
        log.debug("no disk estimate: %s", exc)
    return Estimate(
        disk=disk,
        serving_dtype=_serving_dtype(plan),
        cells=cells,
        stages=stages,
        requests=requests,
        requests_error=requests_error,
        compress_s=compress_s,
        evaluate_s=_makespan(list(per_cell.values()), max(1, serve_slots)),
        requests_per_s=requests_per_s,
        rates=rates,
        startup_s=startup,
        slots=slots,
        to_evaluate=to_evaluate,
        notes=notes,
        power=power,
        family=family,
        per_cell_s=per_cell,
        compress_slots=max(1, compress_slots),
        serve_slots=max(1, serve_slots),
        cluster=cluster.address if cluster is not None else None,
    )


def _serving_dtype(plan: Plan) -> DtypeChoice | None:
    """What the plan's ``[serve] dtype`` computes a bfloat16 checkpoint in on this CPU (the launchers' decision)."""
    if plan.study.device != "cpu":
        return None
    vllm = plan.serve.launcher == "process" and plan.serve.engine == "vllm"
    if plan.serve.launcher not in ("embedded", "auto") and not vllm:
        return None
    asked = "auto" if vllm and plan.serve.dtype is None else plan.serve.dtype  # vLLM's own default is the checkpoint's
    return choose_cpu_dtype(asked, "bfloat16")


def _config_of(cell: Cell) -> str:
    """A cell's configuration: everything but its calibration seed (seeds are pooled into one delta)."""
    return cell.model_dump_json(exclude={"calib_seed"})


def _per_perspective(requests: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for task, n in requests.items():
        out[get_task(task).perspective] += n
    return dict(out)


def _dense_scores(out: Path) -> pl.DataFrame | None:
    """The study's last analysis scores table (``analysis/scores.parquet``), if it has one with intervals."""
    path = out / "analysis" / "scores.parquet"
    try:
        scores = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        return None
    return scores if "se" in scores.columns else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)}s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes}m" if minutes < 120 else f"{minutes // 60}h{minutes % 60:02d}m"


def format_estimate(plan: Plan, est: Estimate) -> str:
    slots = ", ".join(f"GPUs {','.join(map(str, s))}" for s in est.slots) if est.slots != [()] else "no GPU"
    where = (
        f"{est.serve_slots} checkpoint(s) served at once on the Ray cluster at {est.cluster}"
        if est.cluster
        else f"{est.serve_slots} checkpoint(s) served at once"
    )
    replicas = f", {plan.serve.replicas} servers each" if plan.serve.replicas > 1 else ""
    lines = [
        f"study {plan.study.name}: {len(est.cells)} checkpoint(s) into {plan.out_dir()}; "
        f"{where} ({plan.serve.launcher} launcher, {plan.serve.engine}{replicas}; "
        f"{slots if not est.cluster else 'GPUs as Ray assigns them'})",
    ]
    if est.requests is not None:
        per_task = ", ".join(f"{t} {n}" for t, n in sorted(est.requests.items()))
        lines.append(f"requests per checkpoint: {sum(est.requests.values())} ({per_task})")
    else:
        lines.append(f"requests per checkpoint: unknown here ({est.requests_error})")
    width = max(len(c.name) for c in est.cells)
    lines.append(f"  {'checkpoint':<{width}}  {'stage':<10}  compress")
    for c in est.cells:
        if c.name in est.compress_s:
            seconds, measured = est.compress_s[c.name]
            compress = f"{_duration(seconds)} ({'measured' if measured else 'assumed'})"
        else:
            compress = "done"
        lines.append(f"  {c.name:<{width}}  {est.stages[c.name]:<10}  {compress}")
    rate, how = est.requests_per_s
    low, high = min(est.rates.values(), default=rate), max(est.rates.values(), default=rate)
    shown = f"{rate:.2f} req/s" if how or f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f} req/s by method"
    n_measured = sum(m for _, m in est.compress_s.values())
    lines += [
        f"estimate (compression runs {est.compress_slots} checkpoint(s) at a time, then serving runs "
        f"{est.serve_slots} at once):",
        f"  compress {len(est.compress_s)} checkpoint(s): {_duration(est.compress_total_s)} "
        f"({n_measured} measured from manifests, {len(est.compress_s) - n_measured} assumed)",
        f"  serve + evaluate {len(est.to_evaluate)} checkpoint(s): "
        + (_duration(est.evaluate_s) if est.requests is not None else "unknown (no request count)")
        + f" at {shown} per server{f' x {plan.serve.replicas} servers' if plan.serve.replicas > 1 else ''} "
        f"({how or 'assumed'}) and "
        f"{_duration(est.startup_s[0])} start-up each ({'measured' if est.startup_s[1] else 'assumed'})",
        f"  total: about {_duration(est.total_s)}" + ("" if est.requests is not None else " plus evaluation"),
    ]
    if est.disk is not None:
        lines.append(f"{est.disk.line()}" + (": it will not fit" if est.disk.short else ""))
    if est.serving_dtype is not None:
        choice = est.serving_dtype
        lines.insert(
            2,
            f"serving dtype on this CPU ([serve] dtype {choice.requested or 'unset'}): {choice.dtype}, "
            f"{choice.reason} (`uv run serve cpu-dtype` says more)",
        )
    if est.power:
        lines.append(
            f"smallest drop detectable against the dense base at {POWER:.0%} power (paired, two-sided, at "
            f"{ALPHA:g}/{est.family} = {ALPHA / est.family:.2g}: the level the verdicts and the gate use over the "
            f"study's {est.family} pooled deltas; size --sample / evaluate.sample with it):"
        )
        pwidth = max(len(d.perspective) for d in est.power)
        for d in est.power:
            drop = f"{d.drop:5.1f} points" if d.drop is not None else "  n/a"
            lines.append(f"  {d.perspective:<{pwidth}}  {drop}  on {d.requests} requests  ({d.source})")
    if est.notes:
        lines.append("notes:")
        lines += [f"  - {n}" for n in est.notes]
    return "\n".join(lines)
