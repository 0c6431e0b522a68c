"""Load run directories lazily: records (NDJSON as written, or Parquet once compacted) joined with run metadata."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from comptrust_core import RECORD_SCHEMA_VERSION, RECORDS_DIR, RunDirError, RunInfo, SchemaVersionError, read_run_info

from comptrust_analysis.schema import RECORD_SCHEMA

__all__ = ["LoadedRun", "checkpoint_table", "load_runs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    path: Path
    info: RunInfo
    records: pl.LazyFrame


def _scan_ndjson(path: Path) -> pl.LazyFrame | None:
    """Scan one append-only NDJSON file; a torn last line (a write cut short by a crash) is skipped with a warning."""
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as fh:
        fh.seek(size - 1)
        complete = fh.read(1) == b"\n"
    if complete:
        return pl.scan_ndjson(path, schema=RECORD_SCHEMA)
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    log.warning("%s: skipping a torn last line (%d bytes), left by an interrupted write", path, len(data) - cut)
    if cut == 0:
        return None
    return pl.read_ndjson(data[:cut], schema=RECORD_SCHEMA).lazy()


def _scan_records(run_dir: Path) -> pl.LazyFrame:
    rec_dir = run_dir / RECORDS_DIR
    if not rec_dir.is_dir():
        raise RunDirError(f"{run_dir} has no {RECORDS_DIR}/ folder; it holds no records yet (run `evaluate` first)")
    frames: list[pl.LazyFrame] = []
    for path in sorted(rec_dir.glob("*.ndjson")):
        try:
            lf = _scan_ndjson(path)
        except pl.exceptions.PolarsError as exc:
            raise RunDirError(f"{path} is damaged and cannot be read ({exc}); restore it or rerun `evaluate`") from exc
        if lf is not None:
            frames.append(lf)
    frames.extend(pl.scan_parquet(p).select(list(RECORD_SCHEMA)) for p in sorted(rec_dir.glob("*.parquet")))
    if not frames:
        return pl.LazyFrame(schema=RECORD_SCHEMA)
    return pl.concat(frames, how="vertical")


def load_runs(run_dirs: list[Path]) -> list[LoadedRun]:
    """Open each run directory; records are deduplicated by key (the latest attempt wins), lazily."""
    runs: list[LoadedRun] = []
    for run_dir in run_dirs:
        info = read_run_info(run_dir)
        lf = _scan_records(run_dir)
        newest = lf.select(pl.col("schema_version").max()).collect().item()
        if newest is not None and newest > RECORD_SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{run_dir} holds records of schema_version {newest}, newer than this comptrust reads "
                f"({RECORD_SCHEMA_VERSION}); upgrade comptrust (uv sync) to analyze it"
            )
        deduped = lf.sort("finished_at").unique(subset="key", keep="last", maintain_order=True)
        runs.append(LoadedRun(path=run_dir, info=info, records=deduped))
    return runs


def checkpoint_table(runs: list[LoadedRun]) -> pl.DataFrame:
    """One row per (run, endpoint): what the endpoint served, from the manifests recorded in run.json."""
    rows: list[dict[str, object]] = []
    for run in runs:
        for ep in run.info.endpoints:
            m = ep.manifest
            rows.append(
                {
                    "run": run.path.name,
                    "endpoint": ep.name,
                    "checkpoint": m.name if m else ep.name,
                    "method": m.method.name if m else None,
                    "bits": m.method.bits if m else None,
                    "sparsity": m.measured.sparsity if m else None,
                    "pattern": m.method.pattern if m else None,
                    "calib_seed": m.calibration.seed if m and m.calibration else None,
                    "ppl": m.measured.perplexity_after if m else None,
                }
            )
    schema = {
        "run": pl.String,
        "endpoint": pl.String,
        "checkpoint": pl.String,
        "method": pl.String,
        "bits": pl.Int64,
        "sparsity": pl.Float64,
        "pattern": pl.String,
        "calib_seed": pl.Int64,
        "ppl": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)
