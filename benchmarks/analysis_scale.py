"""Scale of ``analyze``: N synthetic records (default 10 million) aggregated into the scores table, Polars vs pandas.

    uv run python benchmarks/analysis_scale.py [--records 10000000] [--keep DIR]
    uv run --with pandas --with pyarrow python benchmarks/analysis_scale.py    # adds the pandas side

Writes a run directory in a temporary folder: ``run.json`` with 8 endpoints and the records as Parquet files (1
million rows each) in the record schema, 8 perspectives, 3% errors, one ``score`` field per answered record, and 1%
of keys written twice (a retry) so that the latest-attempt-wins deduplication has work to do. Then, each in a fresh
child process so that peak memory is its own:

* polars: ``perspective_scores(load_runs([run]))``, the library's own path (lazy scan, dedupe, aggregate);
* pandas (only where pandas and pyarrow are installed; they are not project dependencies): the same aggregation
  written the ordinary pandas way (read the needed columns, sort and drop duplicates, pull the score out of the
  nested list per row, group by).

Prints seconds and peak RSS of each child and whether the two tables agree. Fairness is left out of the synthetic
data (both sides would need its group statistics); every other perspective is scored as an item mean. The numbers are
for the machine it runs on, never a test assertion.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from comptrust_analysis import (
    RECORD_SCHEMA,
    AnalysisConfig,
    analyze,
    checkpoint_table,
    load_runs,
    perspective_scores,
)
from comptrust_analysis.seeds import config_label
from comptrust_analysis.uncertainty import paired_deltas, prepare, score_cells
from comptrust_core import Endpoint, Manifest, RunInfo, write_run_info
from comptrust_core.cpu_dtype import cpu_summary

ENDPOINTS = [f"ep{i}" for i in range(8)]
PERSPECTIVES = ["toxicity", "stereotype", "advglue", "ood", "adv_demonstration", "privacy", "machine_ethics", "ethics2"]
CHUNK = 1_000_000


def _chunk(start: int, n: int, seed: int) -> pl.DataFrame:
    idx = pl.int_range(start, start + n, dtype=pl.Int64, eager=True).alias("i")
    df = pl.DataFrame(idx).with_columns(
        u=pl.Series(pl.int_range(0, n, eager=True)).shuffle(seed=seed).cast(pl.Float64) / n,
    )
    # 1% of rows re-use an earlier key with a later timestamp: a retried request
    key_id = pl.when(pl.col("i") % 100 == 99).then(pl.col("i") - 1).otherwise(pl.col("i"))
    ok = pl.col("u") > 0.03
    # every endpoint answers the same items (so the statistics pass pairs them against the dense ep0); toxicity
    # records carry a toxicity field (1 - it is the item's score), the others a score field
    perspective = pl.lit(pl.Series(PERSPECTIVES)).get(key_id // len(ENDPOINTS) % len(PERSPECTIVES))
    value = (pl.col("u") > 0.4).cast(pl.Float64)
    is_toxicity = perspective == "toxicity"
    score = pl.struct(
        name=pl.when(is_toxicity).then(pl.lit("toxicity")).otherwise(pl.lit("score")),
        value=pl.when(is_toxicity).then(1 - value).otherwise(value),
        variant=pl.lit(None, dtype=pl.String),
    )
    empty_scores = pl.lit([], dtype=RECORD_SCHEMA["scores"])
    cols = {
        "schema_version": pl.lit(1, dtype=pl.Int64),
        "key": key_id.cast(pl.String).str.zfill(32),
        "endpoint": pl.lit(pl.Series(ENDPOINTS)).get(key_id % len(ENDPOINTS)),
        "endpoint_url": pl.lit("http://127.0.0.1:1"),
        "task": perspective,
        "perspective": perspective,
        "sub_scenario": pl.lit(""),
        "item_id": (key_id // (len(ENDPOINTS) * len(PERSPECTIVES))).cast(pl.String),
        "sample_index": pl.lit(0, dtype=pl.Int64),
        "request": pl.lit(None, dtype=RECORD_SCHEMA["request"]),
        "protocol": pl.lit("tgi"),
        "template": pl.lit("none"),
        "status": pl.when(ok).then(pl.lit("ok")).otherwise(pl.lit("error")),
        "error": pl.when(~ok).then(pl.lit("HTTP 500")),
        "http_status": pl.lit(None, dtype=pl.Int64),
        "text": pl.when(ok).then(pl.lit("an answer of a few words")),
        "finish_reason": pl.lit("length"),
        "prompt_tokens": pl.lit(20, dtype=pl.Int64),
        "completion_tokens": pl.lit(8, dtype=pl.Int64),
        "logprobs": pl.lit(None, dtype=pl.List(pl.Float64)),
        "latency_s": pl.col("u") * 2,
        "attempts": pl.lit(1, dtype=pl.Int64),
        "finished_at": pl.lit("2026-01-01T00:00:00.") + pl.col("i").cast(pl.String).str.zfill(9) + pl.lit("Z"),
        "refusal": pl.when(ok).then((pl.col("u") * 7919) % 1 < 0.2),
        "refusal_detector": pl.lit("rules"),
        "refusal_rule": pl.lit(None, dtype=pl.String),
        "label": pl.lit(None, dtype=pl.String),
        "prediction": pl.lit(None, dtype=pl.String),
        "scores": pl.when(ok).then(pl.concat_list(score)).otherwise(empty_scores),
        "attributes": pl.lit([], dtype=RECORD_SCHEMA["attributes"]),
    }
    return df.select(**cols).cast(RECORD_SCHEMA)  # type: ignore[arg-type]


def _manifest(i: int) -> Manifest:
    """ep0 the dense base; ep1-3 Wanda 50% and ep4-6 GPTQ 4-bit, calibration seeds 0-2 each; ep7 magnitude 2:4."""
    method: dict[str, object] = {"name": "dense"}
    if 1 <= i <= 3:
        method = {"name": "wanda", "sparsity": 0.5}
    elif 4 <= i <= 6:
        method = {"name": "gptq", "bits": 4, "group_size": 128}
    elif i == 7:
        method = {"name": "magnitude", "sparsity": 0.5, "pattern": "2:4"}
    seed = (i - 1) % 3 if 1 <= i <= 6 else None
    return Manifest.model_validate(
        {
            "name": f"ckpt{i}",
            "base_model": {"source": "synthetic", "kind": "local", "content_hash": "sha256:synthetic"},
            "method": method,
            "calibration": None if seed is None else {"source": "synthetic", "samples": 8, "seqlen": 32, "seed": seed},
            "backend": {"name": "comptrust", "version": "0.1.0", "device": "cpu"},
            "measured": {"sparsity": 0.0, "effective_bits": 16.0, "wall_time_s": 1.0},
            "created_at": "2026-01-01T00:00:00Z",
            "comptrust_version": "0.1.0",
        }
    )


def write_run(folder: Path, records: int) -> Path:
    run = folder / "run"
    (run / "records").mkdir(parents=True)
    write_run_info(
        run,
        RunInfo(
            run_id="scale",
            plan_hash="h",
            plan="synthetic",
            tasks=PERSPECTIVES,
            endpoints=[
                Endpoint(name=e, url="http://127.0.0.1:1", manifest=_manifest(i)) for i, e in enumerate(ENDPOINTS)
            ],
            created_at="2026-01-01T00:00:00Z",
            comptrust_version="0.1.0",
        ),
    )
    for part, start in enumerate(range(0, records, CHUNK)):
        _chunk(start, min(CHUNK, records - start), seed=part).write_parquet(
            run / "records" / f"part-{part:03d}.parquet"
        )
    return run


def _polars(run: Path) -> pl.DataFrame:
    scores = perspective_scores(load_runs([run]))
    return scores.select("endpoint", "perspective", "score", "refusal_rate", "n", "n_scored", "errors")


def _pandas(run: Path) -> pl.DataFrame:
    pd = importlib.import_module("pandas")  # not a project dependency: typed as Any here

    cols = ["key", "endpoint", "perspective", "status", "refusal", "scores", "finished_at"]
    df = pd.concat([pd.read_parquet(p, columns=cols) for p in sorted((run / "records").glob("*.parquet"))])
    df = df.sort_values("finished_at", kind="stable").drop_duplicates("key", keep="last")

    def item_score(fields: object) -> float | None:
        for f in fields:  # type: ignore[attr-defined]
            if f["name"] == "toxicity" and f["value"] is not None:  # toxicity's score is 1 - mean toxicity
                return 1.0 - float(f["value"])
            if f["name"] == "score" and f["variant"] in (None, "dt-main"):
                return float(f["value"]) if f["value"] is not None else None
        return None

    ok = df["status"] == "ok"
    df["item_score"] = df["scores"].map(item_score).where(ok)
    df["ok"] = ok
    df["refusal_ok"] = df["refusal"].where(ok).astype("float64")
    g = df.groupby(["endpoint", "perspective"], sort=True)
    out = pd.DataFrame(
        {
            "score": g["item_score"].mean() * 100,
            "refusal_rate": g["refusal_ok"].mean() * 100,
            "n": g["ok"].sum(),
            "n_scored": g["item_score"].count(),
            "errors": g["ok"].size() - g["ok"].sum(),
        }
    ).reset_index()
    # DecodingTrust's stereotype score rounds its agreement and refusal rates to 2 decimals (create_json)
    st = out["perspective"] == "stereotype"
    out.loc[st, "score"] = 100 * (1 - (1 - out.loc[st, "score"] / 100).round(2))
    out.loc[st, "refusal_rate"] = (out.loc[st, "refusal_rate"] / 100).round(2) * 100
    return pl.from_dict({c: out[c].tolist() for c in out.columns})


def _statistics(run: Path) -> pl.DataFrame:
    """The whole ``analyze`` pass (both scorer variants, every interval and paired delta, tables and report.html
    written; no plots), as ``analyze RUN --no-plots`` runs it."""
    with tempfile.TemporaryDirectory() as out:
        result = analyze(AnalysisConfig(run_dirs=(run,), out=Path(out), plots=False))
    assert result.deltas is not None and result.cells is not None
    print(
        json.dumps(
            {
                "cells": result.cells.height,
                "deltas": result.deltas.height,
                "pooled": result.deltas.filter(pl.col("checkpoint") == "pooled").height,
            }
        )
    )
    return result.scores.select("endpoint", "perspective", "score", "ci_low", "ci_high")


def _intervals(run: Path) -> pl.DataFrame:
    """The statistics pass alone: every score cell's interval and every paired delta (one read of the records)."""
    runs = load_runs([run])
    data = prepare(pl.concat([r.records.with_columns(run=pl.lit(r.path.name)) for r in runs]), "dt-compressed-trust")
    cells = score_cells(data, "dt-compressed-trust")
    checkpoints = checkpoint_table(runs)
    labels = {(r["run"], r["endpoint"]): config_label(r) for r in checkpoints.to_dicts()}
    scores = pl.DataFrame(
        schema={"run": pl.String, "endpoint": pl.String, "perspective": pl.String, "score": pl.Float64}
    )
    deltas = paired_deltas(data, checkpoints, scores, labels, variant="dt-compressed-trust")
    print(json.dumps({"cells": cells.height, "deltas": deltas.height}))
    return cells.select("endpoint", "perspective", "sub_scenario", "statistic", "estimate", "se")


def _child(engine: str, run: Path, out: Path) -> None:
    t0 = time.perf_counter()
    table = {"polars": _polars, "pandas": _pandas, "analyze": _statistics, "intervals": _intervals}[engine](run)
    seconds = time.perf_counter() - t0
    table.write_parquet(out)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


def _measure(engine: str, run: Path, folder: Path) -> tuple[dict[str, float], pl.DataFrame]:
    out = folder / f"{engine}.parquet"
    proc = subprocess.run(
        [sys.executable, __file__, "--child", engine, "--run", str(run), "--table", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1]), pl.read_parquet(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--keep", type=Path, help="write the synthetic run here and keep it (default: a temp dir)")
    p.add_argument("--child", choices=["polars", "pandas", "analyze", "intervals"], help=argparse.SUPPRESS)
    p.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.run, args.table)
        return
    print(f"CPU: {cpu_summary()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="comptrust-scale-") as tmp:
        folder = args.keep or Path(tmp)
        t0 = time.perf_counter()
        run = write_run(folder, args.records)
        size = sum(f.stat().st_size for f in (run / "records").iterdir()) / 2**20
        print(f"wrote {args.records:,} records ({size:.0f} MiB Parquet) in {time.perf_counter() - t0:.1f} s")
        stats, table = _measure("polars", run, folder)
        print(f"polars (comptrust_analysis): {stats['seconds']:.2f} s, peak RSS {stats['peak_mib']:.0f} MiB")
        inter, _ = _measure("intervals", run, folder)
        print(
            f"statistics pass (every cell's interval, every paired delta and pooled seed delta): "
            f"{inter['seconds']:.2f} s, peak RSS {inter['peak_mib']:.0f} MiB"
        )
        full, _ = _measure("analyze", run, folder)
        print(
            f"analyze (scores, both variants, every interval and paired delta, report; no plots): "
            f"{full['seconds']:.2f} s, peak RSS {full['peak_mib']:.0f} MiB"
        )
        if not all(importlib.util.find_spec(m) for m in ("pandas", "pyarrow")):
            print(
                "pandas: not installed here (it is no project dependency); run with `uv run --with pandas "
                "--with pyarrow python benchmarks/analysis_scale.py` for the side-by-side"
            )
            return
        pstats, ptable = _measure("pandas", run, folder)
        print(f"pandas: {pstats['seconds']:.2f} s, peak RSS {pstats['peak_mib']:.0f} MiB")
        print(
            f"ratio pandas/polars: time {pstats['seconds'] / stats['seconds']:.1f}x, "
            f"peak memory {pstats['peak_mib'] / stats['peak_mib']:.1f}x"
        )
        ours = table.sort("endpoint", "perspective")
        theirs = ptable.sort("endpoint", "perspective").cast(dict(ours.schema))  # type: ignore[arg-type]
        same = ours.select("endpoint", "perspective", "n", "n_scored", "errors").equals(
            theirs.select("endpoint", "perspective", "n", "n_scored", "errors")
        ) and all(
            (ours[c] - theirs[c]).abs().max() < 1e-9  # type: ignore[operator]
            for c in ("score", "refusal_rate")
        )
        print(f"tables agree: {same}")


if __name__ == "__main__":
    main()
