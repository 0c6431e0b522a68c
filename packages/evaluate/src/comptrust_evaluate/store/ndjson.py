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
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from comptrust_core import RECORDS_DIR, Record, RunDirError
from pydantic import ValidationError

__all__ = ["Finished", "RecordFile", "RecordWriter", "load_for_resume", "read_records", "records_path"]

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
    """Appends records to one endpoint's file: a line each, written in the same turn of the event loop (see above).

    A write that fails (the disk full, over quota, read-only, failing) never leaves part of a line behind: the file is
    cut back to its last whole line, the records that were being written are held in memory, ``on_failure`` is told
    once (evaluate stops sending then), and nothing more is written until :meth:`close` tries once to write what is
    held. ``written`` counts the records whole on disk, :attr:`held` those that are not (lost, if that last try
    fails: a rerun redoes their requests)."""

    def __init__(
        self, path: Path, on_failure: Callable[[OSError], None] | None = None, existing_records: int = 0
    ) -> None:
        self.path = path
        self.on_failure = on_failure
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._whole = os.fstat(self._fd).st_size  # the file's length up to its last line known written whole
        self.existing_bytes = self._whole
        self.existing_records = existing_records
        """What the file held when opened: its bytes and (as the resume counted them) its records."""
        self._pending: list[tuple[bytes, bool]] = []  # (line, is an error record)
        self._scheduled = False
        self.failure: OSError | None = None
        self.written = 0
        self._cut_failed = False

    @property
    def written_bytes(self) -> int:
        """Bytes of the records this writer wrote whole."""
        return self._whole - self.existing_bytes

    @property
    def held(self) -> tuple[int, int]:
        """Records not on disk: (ok, error) counts."""
        errors = sum(error for _, error in self._pending)
        return len(self._pending) - errors, errors

    def write(self, record: Record) -> None:
        self._pending.append((_SERIALIZER.to_json(record), record.status == "error"))
        if self._scheduled or self.failure is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self.flush)
        self._scheduled = True

    def flush(self) -> None:
        """Write every pending line now (after a failure: nothing, until :meth:`close`)."""
        self._scheduled = False
        if not self._pending or self._fd < 0 or self.failure is not None:
            return
        self._write_pending()

    def _write_pending(self) -> bool:
        data = b"\n".join(line for line, _ in self._pending) + b"\n"
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._cut_back()
            first = self.failure is None
            self.failure = exc
            if first and self.on_failure is not None:
                self.on_failure(exc)
            return False
        self._whole += len(data)
        self.written += len(self._pending)
        self._pending.clear()
        return True

    def _cut_back(self) -> None:
        """Drop what a failed write left after the last whole line (a partial line never stays in the file)."""
        try:
            os.ftruncate(self._fd, self._whole)
        except OSError as exc:  # the file cannot be cut: never write to it again (a resume drops a torn tail)
            log.warning(
                "%s: could not cut a partial write back (%s); its torn last line is dropped on resume", self.path, exc
            )
            self._cut_failed = True

    def close(self) -> None:
        """Write what is pending (after a failure: one last try, unless the file could not be cut back) and close.
        Never raises for a failed write: :attr:`failure` and :attr:`held` say what happened."""
        if self._fd < 0:
            return
        try:
            if self._pending and not self._cut_failed:
                self._write_pending()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_KEY_AT = b'{"schema_version":'
_ERROR = b'"status":"error"'  # unescaped: a string value can only hold it escaped


UnitId = tuple[str, str, int]
"""(task, item id, sample index): what tells a unit apart within a plan whose item ids are unique."""

_REQUEST_AT = b',"request":{'  # the first unescaped occurrence is the field: a quote inside a string is escaped


@dataclass
class Finished:
    """An endpoint's finished records: their ``keys``, and ``units`` mapping each one's :data:`UnitId` to its key."""

    keys: set[str]
    units: dict[UnitId, str]

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __or__(self, other: Finished) -> Finished:
        return Finished(self.keys | other.keys, {**self.units, **other.units})


_TASK, _PERSPECTIVE = b',"task":"', b'","perspective":"'
_ITEM, _SAMPLE = b',"item_id":"', b'","sample_index":'


def _string(raw: bytes) -> str:
    """A JSON string's text from its raw bytes between the quotes."""
    return json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()


def _head_of(raw: bytes) -> tuple[str, UnitId, bool] | None:
    """The key, unit and error status of a record line, read without parsing the line: the serializer writes
    ``schema_version`` first, ``key`` second, then ``endpoint``, ``endpoint_url``, ``task``, ``perspective``,
    ``sub_scenario``, ``item_id``, ``sample_index`` and ``request``, and an unescaped quote can only end a string, so
    each field is found by its neighbours. None if the line is not laid out so."""
    if not raw.startswith(_KEY_AT) or not raw.endswith(b"}"):
        return None
    at = raw.find(b',"key":"', len(_KEY_AT), 64)
    task_at = raw.find(_TASK)
    item_at = raw.find(_ITEM)
    request_at = raw.find(_REQUEST_AT)
    if min(at, task_at, item_at, request_at) < 0:
        return None
    task_end, sample_at = raw.find(_PERSPECTIVE, task_at), raw.find(_SAMPLE, item_at)
    if task_end < 0 or sample_at < 0 or not (task_end < item_at < sample_at < request_at):
        return None
    digits = raw[sample_at + len(_SAMPLE) : request_at]
    if not digits.isdigit():
        return None
    try:
        task = _string(raw[task_at + len(_TASK) : task_end])
        item = _string(raw[item_at + len(_ITEM) : sample_at])
    except ValueError:
        return None
    key = raw[at + 8 : raw.find(b'"', at + 8)].decode()
    return key, (task, item, int(digits)), _ERROR in raw


def load_for_resume(path: Path, drop_errors: bool) -> Finished:
    """The file's finished records (keys and units), the file made ready to append to: torn lines, duplicates and
    (with ``drop_errors``) error records are removed by rewriting it atomically.

    Only what a resume needs is read: the fields before the request and the status, never a whole record (a million
    records would take minutes and gigabytes to validate). The last line is validated whole (a kill -9 can tear it);
    a line in the middle that is not a record's layout is validated too, and a damaged one stops the run with its
    line number."""
    if not path.exists():
        return Finished(set(), {})
    last_of: dict[str, int] = {}  # key -> its last line's number
    unit_of: dict[str, UnitId] = {}
    errors: set[str] = set()
    torn = False
    seen = 0  # record lines read (a key written twice counts twice)
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            raw = line.rstrip(b"\n")
            if not raw.strip():
                continue
            complete = line.endswith(b"\n")
            found = _head_of(raw) if complete else None
            if found is None:
                try:
                    record = Record.model_validate_json(raw)
                except ValidationError as exc:
                    if not complete:
                        log.warning(
                            "%s: skipping a torn last line (%d bytes) left by an interrupted write", path, len(raw)
                        )
                        torn = True
                        continue
                    raise RunDirError(
                        f"{path}, line {lineno}: damaged record ({exc.errors()[0]['msg']}); restore the file, or "
                        "delete it to redo that endpoint"
                    ) from None
                torn = torn or not complete  # parsed, but no newline after it: complete it on rewrite
                found = record.key, (record.task, record.item_id, record.sample_index), record.status == "error"
            key, unit, error = found
            seen += 1
            last_of[key] = lineno
            unit_of[key] = unit
            if error:
                errors.add(key)
            else:
                errors.discard(key)
    keep = {k for k in last_of if not (drop_errors and k in errors)}
    dropped = len(last_of) - len(keep)
    if dropped:
        log.info("%s: %d error records will be redone (--retry-errors)", path.name, dropped)
    wanted = {n for k, n in last_of.items() if k in keep}
    if torn or dropped or seen != len(wanted):  # a torn line, error records to redo, or keys written twice
        _rewrite(path, wanted)
    return Finished(keep, {unit_of[k]: k for k in keep})


def _rewrite(path: Path, wanted: set[int]) -> None:
    """Keep only lines numbered in ``wanted`` (each completed with a newline), atomically."""
    tmp = path.with_name(f".{path.name}.rewrite-{os.getpid()}")
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            for lineno, line in enumerate(src, 1):
                if lineno in wanted:
                    dst.write(line if line.endswith(b"\n") else line + b"\n")
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
