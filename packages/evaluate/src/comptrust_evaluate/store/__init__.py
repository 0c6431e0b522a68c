"""Where records go: a registry of record stores (``ndjson``: append-only, flushed per record, compacted to Parquet
on demand) and the run dir."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.store.lock import LOCK_FILE, lock_run_dir
from comptrust_evaluate.store.ndjson import Finished, RecordWriter, load_for_resume, read_records, records_path
from comptrust_evaluate.store.parquet import (
    CompactResult,
    compact_endpoint,
    compact_run,
    parquet_path,
    read_parquet_records,
    write_parquet_records,
)
from comptrust_evaluate.store.rundir import open_run_dir

__all__ = [
    "LOCK_FILE",
    "CompactResult",
    "Finished",
    "NdjsonStore",
    "RecordStore",
    "RecordWriter",
    "compact_endpoint",
    "compact_run",
    "get_store",
    "lock_run_dir",
    "open_run_dir",
    "parquet_path",
    "read_records",
    "record_store",
    "records_path",
]


class RecordStore(ABC):
    """One endpoint's records in a run directory."""

    @abstractmethod
    def load(self, run_dir: Path, endpoint: str, drop_errors: bool) -> Finished:
        """The finished records (keys and units), made ready for appending (``drop_errors``: forget error
        records)."""

    @abstractmethod
    def writer(self, run_dir: Path, endpoint: str) -> RecordWriter: ...


log = logging.getLogger(__name__)

STORES: Registry[Callable[[], RecordStore]] = Registry("record store", {})


def record_store(name: str) -> Callable[[Callable[[], RecordStore]], Callable[[], RecordStore]]:
    return STORES.register(name)


class NdjsonStore(RecordStore):
    """Appends to ``records/<endpoint>.ndjson``; resumes from it and from ``records/<endpoint>.parquet`` (compacted
    records), the NDJSON winning where a key is in both."""

    def load(self, run_dir: Path, endpoint: str, drop_errors: bool) -> Finished:
        compacted = read_parquet_records(parquet_path(run_dir, endpoint))
        if drop_errors:
            keep = {k: r for k, r in compacted.items() if r.status != "error"}
            if len(keep) != len(compacted):
                log.info(
                    "%s: %d compacted error records will be redone (--retry-errors)",
                    endpoint,
                    len(compacted) - len(keep),
                )
                write_parquet_records(parquet_path(run_dir, endpoint), list(keep.values()))
            compacted = keep
        units = {(r.task, r.item_id, r.sample_index): k for k, r in compacted.items()}
        return Finished(set(compacted), units) | load_for_resume(records_path(run_dir, endpoint), drop_errors)

    def writer(self, run_dir: Path, endpoint: str) -> RecordWriter:
        return RecordWriter(records_path(run_dir, endpoint))


record_store("ndjson")(NdjsonStore)


def get_store(name: str = "ndjson") -> RecordStore:
    return STORES.get(name)()
