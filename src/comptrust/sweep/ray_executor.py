"""``sweep PLAN --executor ray``: every cell of the plan as Ray tasks on a cluster, the study store as the record.

Each cell is two tasks: compress (``[ray] compress_cpus/gpus/memory_gb``), then serve+evaluate (``serve_cpus``,
``serve_gpus`` = ``gpus_per_server x replicas`` on cuda), chained so that a checkpoint is served as soon as it is
made. Ray runs as many at once as the cluster holds. The tasks read and write the study store
(:mod:`comptrust.sweep.store`), never the driver's disk.

- A node lost mid-cell: Ray reruns the task (``[ray] max_retries``) on another node; it rebuilds the run folder from
  the store's flushed chunks and evaluate resumes it, so only the records since the last flush are redone, and the
  store ends with one record per request.
- The driver killed: Ray ends its tasks. Rerun the same command: cells the store marks done are skipped (even if
  their ending was not seen), the others are redone from what they flushed.
- A cell failing for its own reason fails alone: its stage, error, node and log are in ``sweep-state.json`` and
  ``sweep status``; the rest go on.

The driver prints the study's progress every ``[ray] progress_seconds``: cells done, running and waiting, the
requests answered over the cluster and their rate, an ETA, and each running cell's count, node and GPUs, from what
the cells report to a small actor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comptrust_core import CheckpointError, ConfigError
from comptrust_core.storage import is_storage_error

from comptrust.sweep.cells import CellJob, compress_cell, failure_outcome, serve_evaluate_cell, stored_checkpoint
from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.stages import Stages, request_counts
from comptrust.sweep.state import CellState, SweepState
from comptrust.sweep.store import StudyStore

__all__ = [
    "ClusterShape",
    "NodeShape",
    "Resources",
    "cell_resources",
    "cluster_shape",
    "connect",
    "format_placement",
    "run_cells",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float
    gpus: float
    memory_gb: float | None

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory_gb:
            out["memory"] = int(self.memory_gb * 1024**3)
        return out

    def describe(self) -> str:
        mem = f", {self.memory_gb:g} GB" if self.memory_gb else ""
        return f"{self.cpus:g} CPU, {self.gpus:g} GPU{mem}"


def cell_resources(plan: Plan) -> tuple[Resources, Resources]:
    """What a compression cell and a serve+evaluate cell ask of the cluster."""
    r, cuda = plan.ray, plan.study.device == "cuda"
    compress_gpus = r.compress_gpus if r.compress_gpus is not None else (1.0 if cuda else 0.0)
    serve_gpus = (
        r.serve_gpus
        if r.serve_gpus is not None
        else (float(plan.serve.gpus_per_server * plan.serve.replicas) if cuda else 0.0)
    )
    return (
        Resources(r.compress_cpus, compress_gpus, r.compress_memory_gb),
        Resources(r.serve_cpus, serve_gpus, r.serve_memory_gb),
    )


@dataclass(frozen=True)
class NodeShape:
    name: str
    cpus: float
    gpus: float
    memory_gb: float

    def fits(self, res: Resources) -> int:
        """How many cells asking ``res`` this node holds at once."""
        counts = [self.cpus // res.cpus if res.cpus else 1e9]
        if res.gpus:
            counts.append(self.gpus // res.gpus)
        if res.memory_gb:
            counts.append(self.memory_gb // res.memory_gb)
        return int(min(counts))


@dataclass(frozen=True)
class ClusterShape:
    address: str
    nodes: tuple[NodeShape, ...]

    def slots(self, res: Resources) -> int:
        return sum(n.fits(res) for n in self.nodes)


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:10001``), or start a local Ray."""
    import ray

    # `uv run` makes Ray ship this project to each worker as a new uv environment; the nodes run the comptrust
    # installed on them instead (the README's cluster section), unless the user turns it back on
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False if address is None else None,
        )
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: {exc}; start it (`ray start --head`) or fix "
            "--address / [ray] address"
        ) from None


def cluster_shape() -> ClusterShape:
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        name = f"{node.get('NodeManagerHostname', '?')}:{str(node.get('NodeID', ''))[:8]}"
        nodes.append(
            NodeShape(name, float(res.get("CPU", 0)), float(res.get("GPU", 0)), float(res.get("memory", 0)) / 1024**3)
        )
    address = ray.get_runtime_context().gcs_address
    return ClusterShape(address=str(address), nodes=tuple(sorted(nodes, key=lambda n: n.name)))


# the tasks ------------------------------------------------------------------------------------------------------


def _name_this_node() -> None:
    import ray

    os.environ["COMPTRUST_NODE_NAME"] = f"{os.uname().nodename}:{ray.get_runtime_context().get_node_id()[:8]}"


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _compress_task(job: CellJob, stages: Stages) -> dict[str, Any]:
    _name_this_node()
    try:
        outcome = compress_cell(job, stages)
    except Exception as exc:  # this node's disk refused even the cell's log: the cell may go to another node
        if not is_storage_error(exc):
            raise
        outcome = failure_outcome("compress", exc)
    return {**outcome, "node_id": _node_id()}


def _serve_task(job: CellJob, stages: Stages, board: Any, compressed: dict[str, Any]) -> dict[str, Any]:
    import ray

    if not compressed.get("ok"):
        return {"ok": False, "skipped": True}
    _name_this_node()
    gpus = tuple(int(g) for g in ray.get_gpu_ids())

    def report(update: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            board.update.remote(update)

    try:
        outcome = serve_evaluate_cell(job, stages, gpus, report)
    except Exception as exc:  # this node's disk refused even the cell's log: the cell may go to another node
        if not is_storage_error(exc):
            raise
        outcome = failure_outcome("serve", exc)
    return {**outcome, "node_id": _node_id()}


class _Board:
    """Where running cells report their progress; the driver reads it."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Any]] = {}

    def update(self, update: dict[str, Any]) -> None:
        self.cells[update["cell"]] = {**update, "at": time.time()}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.cells


# the driver -----------------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    cells: list[Cell]
    requests: int
    started: float = field(default_factory=time.monotonic)
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=120))
    finished_requests: dict[str, int] = field(default_factory=dict)

    def lines(self, state: SweepState, running: dict[str, dict[str, Any]], waiting: int) -> list[str]:
        done = sum(state.cells[c.name].stage == "evaluated" for c in self.cells)
        failed = sum(state.cells[c.name].stage == "failed" for c in self.cells)
        live = {k: v for k, v in running.items() if v.get("stage") != "done"}
        answered = sum(self.finished_requests.values()) + sum(int(v.get("done", 0)) for v in live.values())
        now = time.monotonic()
        self.history.append((now, answered))
        rate = 0.0
        window = [(t, n) for t, n in self.history if now - t <= 60]
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        total = self.requests * len(self.cells)
        left = max(0, total - answered)
        eta = f"ETA {_duration(left / rate)}" if rate > 0 and left else ("ETA -" if left else "")
        head = (
            f"study: {done}/{len(self.cells)} cells done, {failed} failed, {len(live)} evaluating, {waiting} waiting"
            f" · {answered:,}/{total:,} requests · {rate:.1f} req/s over the cluster · {eta}"
            f" · {_duration(now - self.started)} elapsed"
        )
        out = [head.rstrip(" ·")]
        for name, v in sorted(live.items()):
            n, t = int(v.get("done", 0)), int(v.get("total", 0)) or 1
            gpus = f" GPUs {','.join(map(str, v['gpus']))}" if v.get("gpus") else ""
            out.append(f"  [{name}] {v.get('stage')} {n:,}/{t:,} ({100 * n / t:.0f}%) on {v.get('node')}{gpus}")
        return out


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 3600 * 2:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


@dataclass
class _Submitted:
    cell: Cell
    kind: str  # "compress" | "serve"
    compressed: Any = None  # a serve task's: the compression outcome it was given (a ref), for a rerun elsewhere


def avoiding(nodes: set[str]) -> dict[str, Any]:
    """Task options that keep a task off ``nodes`` (Ray's node-id label)."""
    return {"label_selector": {"ray.io/node-id": f"!in({','.join(sorted(nodes))})"}} if nodes else {}


def adopt_store_outcomes(store: StudyStore, cells: list[Cell], state: SweepState, fingerprint: str) -> None:
    """Cells the store marks evaluated (for these settings and this very cell) are done, whatever the driver saw:
    a restarted driver adopts what finished while it was away."""
    for cell in cells:
        cs = state.cells[cell.name]
        if cs.stage == "evaluated" and cs.evaluated_with == fingerprint:
            continue
        outcome = store.cell_outcome(cell.name)
        if (
            outcome
            and outcome.get("stage") == "evaluated"
            and outcome.get("evaluated_with") == fingerprint
            and outcome.get("cell") == cell.model_dump_json()
        ):
            _apply(cs, cell, "serve", outcome)


def _apply(cs: CellState, cell: Cell, kind: str, outcome: dict[str, Any]) -> None:
    cs.node = outcome.get("node")
    if not outcome.get("ok"):
        cs.stage, cs.failed_stage, cs.error = "failed", outcome.get("failed_stage", kind), outcome.get("error")
        return
    if kind == "compress":
        cs.stage, cs.error, cs.failed_stage = "compressed", None, None
        cs.compress_s, cs.cell = outcome.get("compress_s"), cell.model_dump_json()
        return
    cs.stage, cs.error, cs.failed_stage = "evaluated", None, None
    cs.ok, cs.errors = int(outcome["ok_requests"]), int(outcome["errors"])
    cs.requests, cs.evaluate_s = int(outcome["requests"]), outcome.get("evaluate_s")
    cs.startup_s, cs.gpus = outcome.get("startup_s"), list(outcome.get("gpus") or [])
    cs.evaluated_with, cs.cell = outcome.get("evaluated_with"), cell.model_dump_json()


def _checkpoint_in_store(store: StudyStore, cell: Cell) -> dict[str, Any] | None:
    """:func:`stored_checkpoint` for the driver: a checkpoint made for another cell is left to the compression task,
    which refuses it with its reason, in the cell's own log."""
    try:
        made = stored_checkpoint(store, cell)
    except CheckpointError:
        return None
    return None if made is None else {**made, "node": "store"}


def _system_failure(exc: BaseException) -> str:
    """What a task that did not return says (its node lost more often than max_retries, or a Ray error)."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[-1] if text else ''}".strip()


@contextlib.contextmanager
def _interrupt_cancels(refs: dict[Any, _Submitted]) -> Iterator[None]:
    import ray

    try:
        yield
    except BaseException:
        for ref in list(refs):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


def run_cells(
    plan: Plan,
    todo: list[Cell],
    state: SweepState,
    *,
    save: Callable[[], None],
    stages: Stages,
    store: StudyStore,
) -> None:
    """Run the cells still to do as Ray tasks (the caller has connected), updating ``state`` as outcomes arrive."""
    import ray

    compress_res, serve_res = cell_resources(plan)
    shape = cluster_shape()
    for what, res in (("compression", compress_res), ("serve+evaluate", serve_res)):
        if not shape.slots(res):
            log.warning(
                "no node of the cluster can hold a %s cell (%s; nodes: %s): they wait until one joins",
                what,
                res.describe(),
                ", ".join(f"{n.name} {n.cpus:g} CPU {n.gpus:g} GPU" for n in shape.nodes) or "none",
            )
    requests = sum(request_counts(plan).values())
    plan_json = plan.model_dump_json()
    retries = plan.ray.max_retries
    compress_options = {**compress_res.options(), "max_retries": retries, "retry_exceptions": False}
    serve_options = {**serve_res.options(), "max_retries": retries, "retry_exceptions": False}
    compress_task, serve_task = ray.remote(_compress_task), ray.remote(_serve_task)
    compress = compress_task.options(**compress_options, name="comptrust-compress")
    serve = serve_task.options(**serve_options, name="comptrust-serve-evaluate")
    board: Any = ray.remote(_Board).options(num_cpus=0, max_restarts=-1, max_task_retries=-1).remote()
    stages_ref = ray.put(stages)
    refs: dict[Any, _Submitted] = {}
    full: dict[str, set[str]] = {}  # per cell, the nodes whose own disk refused its writes
    for cell in todo:
        job = CellJob(plan_json=plan_json, cell=cell.name, store_url=store.url, requests=requests)
        made = _checkpoint_in_store(store, cell)
        if made is not None:  # no compression task for a checkpoint the store holds already (a rerun)
            _apply(state.cells[cell.name], cell, "compress", made)
            c_ref = ray.put(made)
        else:
            c_ref = compress.remote(job, stages_ref)
            refs[c_ref] = _Submitted(cell, "compress")
        s_ref = serve.remote(job, stages_ref, board, c_ref)
        refs[s_ref] = _Submitted(cell, "serve", c_ref)
    save()
    log.info(
        "submitted %d cell(s) to the cluster at %s (%d node(s); %d compression and %d serve+evaluate cells fit at "
        "once); study store: %s",
        len(todo),
        shape.address,
        len(shape.nodes),
        shape.slots(compress_res),
        shape.slots(serve_res),
        store.url,
    )
    progress = _Progress(todo, requests)
    last_print = 0.0
    with _interrupt_cancels(refs):
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                sub = refs.pop(ref)
                cs = state.cells[sub.cell.name]
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # a system failure past max_retries: this cell fails, the rest go on
                    outcome = {"ok": False, "failed_stage": sub.kind, "error": _system_failure(exc)}
                    log.error("[%s] %s: %s (the rest of the study goes on)", sub.cell.name, sub.kind, outcome["error"])
                if outcome.get("skipped"):
                    continue
                if outcome.get("node_disk_full") and outcome.get("node_id"):
                    bad = full.setdefault(sub.cell.name, set())
                    bad.add(str(outcome["node_id"]))
                    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
                    if alive - bad:  # another node can take it: the cell is not failed, it moves
                        log.warning(
                            "[%s] %s on %s: %s; running it again on another node",
                            sub.cell.name,
                            sub.kind,
                            outcome.get("node"),
                            outcome.get("error"),
                        )
                        job = CellJob(plan_json=plan_json, cell=sub.cell.name, store_url=store.url, requests=requests)
                        elsewhere = avoiding(bad)
                        c_ref = sub.compressed
                        if sub.kind == "compress":
                            moved = compress_task.options(**compress_options, **elsewhere, name="comptrust-compress")
                            c_ref = moved.remote(job, stages_ref)
                            refs[c_ref] = _Submitted(sub.cell, "compress")
                        moved = serve_task.options(**serve_options, **elsewhere, name="comptrust-serve-evaluate")
                        s_ref = moved.remote(job, stages_ref, board, c_ref)
                        refs[s_ref] = _Submitted(sub.cell, "serve", c_ref)
                        continue
                _apply(cs, sub.cell, sub.kind, outcome)
                if sub.kind == "serve" and outcome.get("ok"):
                    progress.finished_requests[sub.cell.name] = int(outcome.get("ok_requests", 0))
                    log.info(
                        "[%s] evaluated on %s: %d ok, %d errors in %.0fs",
                        sub.cell.name,
                        outcome.get("node"),
                        cs.ok,
                        cs.errors,
                        cs.evaluate_s or 0,
                    )
                elif not outcome.get("ok"):
                    cs.log = f"{store.url}/logs/{sub.cell.name}/"
                    log.error("[%s] %s failed: %s (log: %s)", sub.cell.name, cs.failed_stage, cs.error, cs.log)
                save()
            now = time.monotonic()
            if now - last_print >= plan.ray.progress_seconds or not refs:
                last_print = now
                running: dict[str, dict[str, Any]] = {}
                with contextlib.suppress(Exception):  # progress is a view: a board being restarted skips one print
                    running = ray.get(board.snapshot.remote(), timeout=10)
                live = {k for k, v in running.items() if v.get("stage") != "done"}
                waiting = sum(1 for s in refs.values() if s.kind == "serve" and s.cell.name not in live)
                for line in progress.lines(state, running, waiting):
                    log.info("%s", line)


def materialize_runs(store: StudyStore, out: Path, names: list[str]) -> tuple[Path, ...]:
    """Each evaluated cell's run folder, rebuilt from the store under ``out/runs`` for analyze."""
    return tuple(store.materialize_run(name, out / "runs" / name) for name in names)


def upload_analysis(store: StudyStore, analysis: Path) -> None:
    if store.is_local and Path(store.path("analysis")).resolve() == analysis.resolve():
        return
    for path in sorted(p for p in analysis.rglob("*") if p.is_file()):
        store.put_file(path, f"analysis/{path.relative_to(analysis).as_posix()}")


def format_placement(plan: Plan, shape: ClusterShape, est: Any) -> str:
    """``sweep --dry-run --executor ray``: what each cell asks, what each node holds, and where the cells still to
    evaluate would run (longest first onto the slot free first, with the estimate's times)."""
    compress_res, serve_res = cell_resources(plan)
    total_gpus = sum(n.gpus for n in shape.nodes)
    lines = [
        f"placement on the Ray cluster at {shape.address}: {len(shape.nodes)} node(s), "
        f"{sum(n.cpus for n in shape.nodes):g} CPUs, {total_gpus:g} GPUs",
        f"  a compression cell asks {compress_res.describe()}: {shape.slots(compress_res)} at once",
        f"  a serve+evaluate cell asks {serve_res.describe()}"
        + (f" ({plan.serve.replicas} servers of {plan.serve.gpus_per_server} GPU)" if plan.serve.replicas > 1 else "")
        + f": {shape.slots(serve_res)} at once",
    ]
    slots: list[tuple[str, int]] = []
    for node in shape.nodes:
        n_serve = node.fits(serve_res)
        lines.append(
            f"  node {node.name}: {node.cpus:g} CPU, {node.gpus:g} GPU, {node.memory_gb:.0f} GB -> "
            f"{node.fits(compress_res)} compression / {n_serve} serve+evaluate cell(s) at once"
        )
        slots += [(node.name, i) for i in range(n_serve)]
    if not slots or not est.per_cell_s:
        return "\n".join(lines)
    free = dict.fromkeys(slots, 0.0)
    lines.append("  serve+evaluate, in the order the cells would start (estimated start-up and evaluation):")
    for name, seconds in sorted(est.per_cell_s.items(), key=lambda kv: -kv[1]):
        slot = min(free, key=lambda s: (free[s], s))
        start = free[slot]
        free[slot] = start + seconds
        lines.append(f"    {name}: {slot[0]} slot {slot[1]}, from +{_duration(start)} to +{_duration(start + seconds)}")
    return "\n".join(lines)
