"""Append-only NDJSON record files: one line per finished request, written to the file as it finishes.

Inside a running event loop, the lines of the requests that finish in one turn of the loop go to the file in one
``write`` at the start of the next turn (no user-space buffer survives that turn); outside a loop each line is
written at once. Either way a kill -9 loses at most the requests that were in flight or had finished in that same
turn, which a resume redoes.

A kill -9 can leave a torn last line; readers skip it with a warning, and a resuming run rewrites the file without
it (atomically) before appending, so a record never glues onto a partial line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from comptrust_core import RECORDS_DIR, Record, RunDirError, atomic_write_text
from pydantic import ValidationError

__all__ = ["RecordFile", "RecordWriter", "load_for_resume", "read_records", "records_path"]

log = logging.getLogger(__name__)


_SERIALIZER = Record.__pydantic_serializer__  # bytes straight from pydantic-core: model_dump_json without the str


def records_path(run_dir: Path, endpoint: str) -> Path:
    return run_dir / RECORDS_DIR / f"{endpoint}.ndjson"


@dataclass
class RecordFile:
    """What a records file holds: the last record of each key, and whether the file needs a clean rewrite."""

    records: dict[str, Record]
    torn: bool = False
    duplicates: int = 0


def _scan(path: Path) -> RecordFile:
    out = RecordFile(records={})
    if not path.exists():
        return out
    data = path.read_bytes()
    lines = data.split(b"\n")
    # the piece after the last newline is complete only if the file ends with a newline (then it is b"")
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = lineno == len(lines)
        try:
            record = Record.model_validate_json(raw)
        except ValidationError as exc:
            if last:
                log.warning("%s: skipping a torn last line (%d bytes) left by an interrupted write", path, len(raw))
                out.torn = True
                continue
            raise RunDirError(
                f"{path}, line {lineno}: damaged record ({exc.errors()[0]['msg']}); restore the file, or delete it to "
                "redo that endpoint"
            ) from None
        if last:  # parsed, but no newline after it: complete it on rewrite
            out.torn = True
        if record.key in out.records:
            out.duplicates += 1
        out.records[record.key] = record
    return out


def read_records(path: Path) -> list[Record]:
    """Every record of one file (the last one per key), skipping a torn last line with a warning."""
    return list(_scan(path).records.values())


class RecordWriter:
    """Appends records to one endpoint's file: a line each, written in the same turn of the event loop (see above)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, record: Record) -> None:
        self._pending.append(_SERIALIZER.to_json(record))
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self.flush)
        self._scheduled = True

    def flush(self) -> None:
        """Write every pending line now."""
        self._scheduled = False
        if not self._pending or self._fd < 0:
            return
        data = memoryview(b"\n".join(self._pending) + b"\n")
        self._pending.clear()
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_for_resume(path: Path, drop_errors: bool) -> dict[str, Record]:
    """The finished records of a file, ready to append to: torn lines, duplicates and (with ``drop_errors``) error
    records are removed by rewriting the file atomically."""
    found = _scan(path)
    keep = {k: r for k, r in found.records.items() if not (drop_errors and r.status == "error")}
    dropped = len(found.records) - len(keep)
    if found.torn or found.duplicates or dropped:
        if dropped:
            log.info("%s: %d error records will be redone (--retry-errors)", path.name, dropped)
        atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in keep.values()))
    return keep
