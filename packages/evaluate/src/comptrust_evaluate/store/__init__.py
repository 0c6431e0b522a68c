"""Where records go: a registry of record stores (``ndjson``: append-only, flushed per record) and the run dir."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from comptrust_core import Record

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.store.ndjson import RecordWriter, load_for_resume, read_records, records_path
from comptrust_evaluate.store.rundir import open_run_dir

__all__ = [
    "NdjsonStore",
    "RecordStore",
    "RecordWriter",
    "get_store",
    "open_run_dir",
    "read_records",
    "record_store",
    "records_path",
]


class RecordStore(ABC):
    """One endpoint's records in a run directory."""

    @abstractmethod
    def load(self, run_dir: Path, endpoint: str, drop_errors: bool) -> dict[str, Record]:
        """The finished records by key, made ready for appending (``drop_errors``: forget error records)."""

    @abstractmethod
    def writer(self, run_dir: Path, endpoint: str) -> RecordWriter: ...


STORES: Registry[Callable[[], RecordStore]] = Registry("record store", {})


def record_store(name: str) -> Callable[[Callable[[], RecordStore]], Callable[[], RecordStore]]:
    return STORES.register(name)


class NdjsonStore(RecordStore):
    def load(self, run_dir: Path, endpoint: str, drop_errors: bool) -> dict[str, Record]:
        return load_for_resume(records_path(run_dir, endpoint), drop_errors)

    def writer(self, run_dir: Path, endpoint: str) -> RecordWriter:
        return RecordWriter(records_path(run_dir, endpoint))


record_store("ndjson")(NdjsonStore)


def get_store(name: str = "ndjson") -> RecordStore:
    return STORES.get(name)()
