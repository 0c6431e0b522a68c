"""Compaction: an endpoint's NDJSON records folded into ``records/<endpoint>.parquet`` (one row per key).

Polars writes and reads the Parquet files; it is an optional dependency (``comptrust-evaluate[parquet]``) imported
only when a run directory is compacted or holds Parquet files. The column types follow :class:`comptrust_core.Record`
field by field, so a record's Parquet row and its NDJSON line load to the same columns.

Crash safety: the new Parquet file (the old one's rows merged with the NDJSON's, the NDJSON winning a tie) is written
to a temporary file and renamed into place before the NDJSON file is removed. A crash in between leaves the same
records in both forms, which readers deduplicate by key and the next compaction folds again.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from comptrust_core import RECORDS_DIR, ConfigError, Record, RunDirError
from pydantic import BaseModel

from comptrust_evaluate.store.lock import lock_run_dir
from comptrust_evaluate.store.ndjson import read_records, records_path

__all__ = ["CompactResult", "compact_endpoint", "compact_run", "parquet_path", "read_parquet_records"]

log = logging.getLogger(__name__)


def parquet_path(run_dir: Path, endpoint: str) -> Path:
    return run_dir / RECORDS_DIR / f"{endpoint}.parquet"


def _polars() -> types.ModuleType:
    try:
        import polars
    except ImportError:
        raise ConfigError(
            "Parquet records need polars: install comptrust-evaluate[parquet] (uv sync --extra parquet)"
        ) from None
    return polars


def _dtype(pl: Any, annotation: Any) -> Any:
    """The Polars type of a pydantic field annotation (str, int, float, bool, Literal, X | None, tuple/list, models)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _dtype(pl, inner)
    if origin is Literal:
        return pl.String
    if origin in (tuple, list):
        return pl.List(_dtype(pl, typing.get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pl.Struct({name: _dtype(pl, f.annotation) for name, f in annotation.model_fields.items()})
    simple = {str: pl.String, int: pl.Int64, float: pl.Float64, bool: pl.Boolean}
    if annotation in simple:
        return simple[annotation]
    raise TypeError(f"no Parquet type for record field type {annotation!r}")


def record_schema(pl: Any) -> dict[str, Any]:
    return {name: _dtype(pl, f.annotation) for name, f in Record.model_fields.items()}


def _frame(pl: Any, records: list[Record]) -> Any:
    lines = "".join(r.model_dump_json() + "\n" for r in records).encode()
    schema = record_schema(pl)
    if not lines:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(io.BytesIO(lines), schema=schema)


def read_parquet_records(path: Path) -> dict[str, Record]:
    """The records of one compacted file, by key."""
    if not path.exists():
        return {}
    pl = _polars()
    try:
        rows = pl.read_parquet(path).to_dicts()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise RunDirError(f"{path} is damaged ({exc}); restore it, or delete it to redo that endpoint") from None
    out: dict[str, Record] = {}
    for row in rows:
        record = Record.model_validate(row)
        out[record.key] = record
    return out


def write_parquet_records(path: Path, records: list[Record]) -> None:
    """Write ``records`` to ``path`` atomically (a temporary file renamed into place)."""
    pl = _polars()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _frame(pl, records).write_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CompactResult:
    endpoint: str
    folded: int  # NDJSON records folded in
    total: int  # records in the Parquet file afterwards


def compact_endpoint(run_dir: Path, endpoint: str) -> CompactResult:
    """Fold ``records/<endpoint>.ndjson`` into ``records/<endpoint>.parquet``, then remove the NDJSON file.

    Holds the run directory's lock (see :mod:`comptrust_evaluate.store.lock`): refused while another process
    evaluates into or compacts the same run directory.
    """
    ndjson, parquet = records_path(run_dir, endpoint), parquet_path(run_dir, endpoint)
    with lock_run_dir(run_dir, "compact"):
        fresh = read_records(ndjson) if ndjson.exists() else []
        merged = read_parquet_records(parquet)
        merged.update((r.key, r) for r in fresh)
        if fresh or not parquet.exists():
            write_parquet_records(parquet, list(merged.values()))
        ndjson.unlink(missing_ok=True)
    log.info("%s: %d records folded into %s (%d in all)", endpoint, len(fresh), parquet.name, len(merged))
    return CompactResult(endpoint, len(fresh), len(merged))


def compact_run(run_dir: Path) -> list[CompactResult]:
    """Compact every endpoint's records of a run directory."""
    folder = run_dir / RECORDS_DIR
    if not folder.is_dir():
        raise RunDirError(f"{run_dir} has no {RECORDS_DIR}/ folder: not a run directory, or no records yet")
    names = sorted({p.stem for p in folder.glob("*.ndjson")} | {p.stem for p in folder.glob("*.parquet")})
    with lock_run_dir(run_dir, "compact"):
        return [compact_endpoint(run_dir, name) for name in names]
