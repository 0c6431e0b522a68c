"""The quickstart's evaluate stage in each dtype, side by side in one run: the plan's own ``dtype`` (``auto``, decided
for this CPU by comptrust_core.cpu_dtype), float32, and bfloat16 (what ``auto`` computed in on every CPU before that
decision existed), on the same checkpoints, through the embedded server, with the plan's suite and concurrency.

    uv run python benchmarks/quickstart_dtype.py [--checkpoints DIR] [--only NAME ...] [--cpu measured|bf16|no-bf16]

For each checkpoint the three servings run one after the other, each dtype first for one checkpoint in three (so a
busy machine, or whatever the first server after a pause pays, falls on all three alike). It prints requests/s per
dtype, the plan's dtype against float32 (the issue's must: at least 0.8x) and against bfloat16 (how much faster the
evaluate stage is than before), how many answers are identical between float32 and bfloat16 (greedy requests, where
an answer can only differ through arithmetic) and between two runs in the same dtype, and each perspective's score
in the plan's dtype minus in bfloat16. ``--cpu bf16`` / ``--cpu no-bf16`` force the decision (a synthetic
measurement for this machine in a private cache) to show the other branch on one machine. To reproduce a CPU without
AVX-512 on an AVX-512 one: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (torch's and oneDNN's own switches).

Checkpoints come from ``--checkpoints`` (default ``sweeps/quickstart/checkpoints``, what ``uv run sweep
examples/quickstart.toml`` made); any that is missing is compressed there first, as the sweep would.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from comptrust_analysis import load_runs, perspective_scores
from comptrust_compress import compress
from comptrust_core import Record
from comptrust_core.cpu_dtype import cpu_profile, cpu_summary, read_cpuinfo, store_profile, synthetic_profile
from comptrust_evaluate import EndpointSpec, evaluate
from comptrust_evaluate.store.ndjson import read_records
from comptrust_serve import launch_checkpoint, open_checkpoint

from comptrust.sweep.plan import load_plan
from comptrust.sweep.stages import compress_config, evaluate_config, launch_options

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Serving:
    dtype: str  # what the server computed in
    seconds: float
    ok: int
    errors: int
    answers: dict[tuple[str, str, int], Record] = field(repr=False)
    scores: dict[str, float | None] = field(repr=False)

    @property
    def rate(self) -> float:
        return (self.ok + self.errors) / self.seconds


def _serve_and_evaluate(plan_path: Path, cell_name: str, folder: Path, dtype: str, work: Path) -> Serving:
    plan = load_plan(plan_path)
    cell = next(c for c in plan.cells() if c.name == cell_name)
    options = replace(launch_options(plan, cell, (), work / "logs"), dtype=dtype)
    run = work / f"{cell_name}-{dtype}"
    with launch_checkpoint(open_checkpoint(folder), plan.serve.launcher, options) as server:
        config = evaluate_config(plan, run, EndpointSpec.from_endpoint(server.endpoint), progress="off")
        started = time.perf_counter()
        summary = evaluate(config)
        seconds = time.perf_counter() - started
        served = server.endpoint.dtype or dtype
    records = [r for path in sorted((run / "records").glob("*.ndjson")) for r in read_records(path)]
    frame = perspective_scores(load_runs([run]), "dt-compressed-trust")
    scores = {str(r["perspective"]): r["score"] for r in frame.iter_rows(named=True)}
    ends = summary.endpoints[0]
    return Serving(
        dtype=served,
        seconds=seconds,
        ok=ends.ok,
        errors=ends.errors,
        answers={(r.task, r.item_id, r.sample_index): r for r in records},
        scores=scores,
    )


def _same(a: Serving, b: Serving, greedy_only: bool) -> tuple[int, int]:
    same = total = 0
    for key, ra in a.answers.items():
        rb = b.answers.get(key)
        if rb is None or ra.status != "ok" or rb.status != "ok":
            continue
        if greedy_only and ra.request.params.temperature > 0:
            continue
        total += 1
        same += ra.text == rb.text
    return same, total


def _force(kind: str) -> None:
    if kind == "measured":
        return
    private = Path(tempfile.mkdtemp(prefix="cpu-kind-"))
    os.environ["COMPTRUST_CACHE"] = str(private)  # the servers (child processes) read the same decision
    fast = kind == "bf16"
    profile = synthetic_profile(
        bfloat16=(True, 2.0) if fast else (False, 0.25),
        capability="(forced)",
        cpu=f"{read_cpuinfo().model} [forced to look {'like' if fast else 'unlike'} a CPU with bfloat16 hardware]",
    )
    store_profile(profile)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=ROOT / "examples" / "quickstart.toml")
    p.add_argument("--checkpoints", type=Path, default=Path("sweeps/quickstart/checkpoints"))
    p.add_argument("--only", nargs="+", help="checkpoint names (default: every cell of the plan)")
    p.add_argument("--cpu", choices=["measured", "bf16", "no-bf16"], default="measured")
    p.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = p.parse_args(argv)
    plan = load_plan(args.plan)
    cells = [c for c in plan.cells() if not args.only or c.name in args.only]
    for cell in cells:
        folder = args.checkpoints / cell.name
        if not (folder / "comptrust.json").is_file():
            print(f"compressing {cell.name} into {folder}", flush=True)
            compress(compress_config(plan, cell, folder))
    _force(args.cpu)
    import torch  # noqa: F401  (so the header names torch's capability)

    profile = cpu_profile()
    print(f"CPU: {cpu_summary()}")
    print(f"decision: bfloat16 {'fast' if profile.fast('bfloat16') else 'slow'} ({profile.why('bfloat16')})")
    print(
        f"plan: {args.plan} (dtype {plan.serve.dtype!r}, suite {plan.evaluate.suite}, "
        f"{plan.evaluate.max_concurrency} in flight)\n",
        flush=True,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="quickstart-dtype-"))
    rows: list[tuple[str, dict[str, Serving]]] = []
    dtypes = [plan.serve.dtype or "auto", "float32", "bfloat16"]
    for i, cell in enumerate(cells):
        folder = args.checkpoints / cell.name
        servings: dict[str, Serving] = {}
        for dtype in dtypes[i % 3 :] + dtypes[: i % 3]:  # each dtype goes first, second and third in turn
            done = servings[dtype] = _serve_and_evaluate(args.plan, cell.name, folder, dtype, work)
            print(
                f"  {cell.name} --dtype {dtype} -> {done.dtype}: {done.ok + done.errors} requests in "
                f"{done.seconds:.1f} s ({done.rate:.2f} req/s, {done.errors} errors)",
                flush=True,
            )
        rows.append((cell.name, servings))

    plan_dtype = plan.serve.dtype or "auto"
    print(
        "\n| checkpoint | plan's dtype | req/s plan's | float32 | bfloat16 | plan's / float32 | plan's / bfloat16 "
        "| greedy same f32/bf16 | all same f32/bf16 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = dict.fromkeys(("plan", "float32", "bfloat16"), 0.0)
    for name, s in rows:
        ours, f32, bf16 = s[plan_dtype], s["float32"], s["bfloat16"]
        totals["plan"] += ours.seconds
        totals["float32"] += f32.seconds
        totals["bfloat16"] += bf16.seconds
        greedy, greedy_n = _same(f32, bf16, greedy_only=True)
        every, every_n = _same(f32, bf16, greedy_only=False)
        print(
            f"| {name} | {ours.dtype} | {ours.rate:.2f} | {f32.rate:.2f} | {bf16.rate:.2f} "
            f"| {ours.rate / f32.rate:.2f}x | {ours.rate / bf16.rate:.2f}x | {greedy}/{greedy_n} | {every}/{every_n} |"
        )
    print(
        f"\nevaluate stage, {len(rows)} checkpoint(s): plan's dtype {totals['plan']:.0f} s, float32 "
        f"{totals['float32']:.0f} s, bfloat16 (before the decision) {totals['bfloat16']:.0f} s: "
        f"{totals['bfloat16'] / totals['plan']:.2f}x faster than before, "
        f"{totals['float32'] / totals['plan']:.2f}x float32's speed"
    )

    print("\nscore, plan's dtype minus bfloat16 (0: unchanged; else the answers that differ, counted above):")
    perspectives = sorted({k for _, s in rows for k in s[plan_dtype].scores})
    print("| checkpoint | " + " | ".join(perspectives) + " |")
    print("|---|" + "---:|" * len(perspectives))
    for name, s in rows:
        cells_text = []
        for k in perspectives:
            a, b = s[plan_dtype].scores.get(k), s["bfloat16"].scores.get(k)
            cells_text.append("-" if a is None or b is None else f"{a - b:+.1f}")
        print(f"| {name} | " + " | ".join(cells_text) + " |")
    print("\nthe same dtype twice (the plan's run against the run of the dtype it resolved to): answers identical,")
    print("greedy and all; the rest is run-to-run variation (the server's dynamic batches differ from run to run):")
    for name, s in rows:
        ours = s[plan_dtype]
        if ours.dtype in s and ours.dtype != plan_dtype:
            greedy, greedy_n = _same(ours, s[ours.dtype], greedy_only=True)
            every, every_n = _same(ours, s[ours.dtype], greedy_only=False)
            print(f"  {name} ({ours.dtype}): greedy {greedy}/{greedy_n}, all {every}/{every_n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
