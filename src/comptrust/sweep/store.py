"""The study store of a cluster sweep: a shared path or an object-store URL (``s3://``, ``gs://``, through fsspec)
that holds what every node must see.

Layout under the store's root (the same names as a local sweep's folder)::

    checkpoints/<cell>/...                    uploaded whole, comptrust.json (the manifest) last
    runs/<cell>/run.json, plan-summary.json   the run folder's small files, replaced whole
    runs/<cell>/records/<ep>.ndjson.chunks/<seq>-<attempt>.ndjson
                                              records flushed while the cell runs, in order; once the cell is
                                              done, one <seq>-<attempt>-whole.ndjson replaces them
    cells/<cell>.json                         the cell's outcome, written last: the cell is done
    logs/<cell>/...                           the cell's log and its servers' logs

Nothing here assumes that the driver and the workers share a disk: a worker writes records to its own disk and
:class:`RunSync` flushes them to the store in chunks, each written whole (an object put, or a rename on a
filesystem), so a worker lost mid-cell costs only what it wrote since its last flush, and a rerun on any node
rebuilds the run folder from the store and resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from comptrust_core import MANIFEST_FILE, RECORDS_DIR, ConfigError, StorageError
from comptrust_core.storage import is_storage_error, storage_error
from fsspec.implementations.local import LocalFileSystem

__all__ = ["PUT_TRIES", "RunSync", "StaleAttempt", "StoreRefused", "StudyStore"]

log = logging.getLogger(__name__)


class StoreRefused(StorageError):
    """The study store would not take a write (its disk full, its quota or permissions, an object store's refusal
    after every retry): not this node's fault, so another node would not do better."""


PUT_TRIES = 5
"""Tries of one put to an object store before the cell fails with the store's message."""
PUT_BACKOFF_S = 0.5
"""The wait before the first retry of a refused put; it doubles with each retry (0.5, 1, 2, 4 s)."""

_CHUNKS = ".chunks"
_WHOLE = "-whole.ndjson"
"""A chunk holding the whole records file up to it: what comes before it is superseded."""
_LOCAL_ONLY = (".lock",)
"""Run-folder files that belong to the writing process alone (evaluate's lock)."""


class StudyStore:
    """One study's store: a folder on a filesystem fsspec knows (local, NFS, S3, GCS, ...)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or url
        try:
            fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            scheme = self.url.split("://", 1)[0]
            raise ConfigError(
                f"study store {url!r}: {exc}; install the filesystem for {scheme}:// (for S3: "
                "`uv sync --extra s3`, or pip install s3fs; for GCS: gcsfs)"
            ) from None
        self.fs: Any = fs
        self.root: str = root.rstrip("/")

    def __reduce__(self) -> tuple[Callable[[str], StudyStore], tuple[str]]:
        return StudyStore, (self.url,)  # a worker opens its own connection, with its own credentials from its env

    @property
    def is_local(self) -> bool:
        """Whether the store is a path of this machine's filesystem (shared or not)."""
        return isinstance(self.fs, LocalFileSystem)

    def local_path(self, rel: str) -> Path:
        """The path of ``rel`` where the store is a local (or mounted) filesystem."""
        assert self.is_local, "only a filesystem store has local paths"
        return Path(self.path(rel))

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_text(self, rel: str) -> str | None:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return bytes(f.read()).decode("utf-8")
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one file whole: readers see all of it or none (a rename on a filesystem, one put elsewhere). A
        write the disk refuses is a :class:`~comptrust_core.StorageError`, leaving nothing behind; a put the object
        store refuses is retried (:data:`PUT_TRIES`, with backoff), then one too."""
        target = self.path(rel)
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                Path(tmp).unlink(missing_ok=True)
                raise self._refused(rel, exc) from exc
        else:
            self._put(rel, lambda: self.fs.pipe_file(target, data))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def put_file(self, local: Path, rel: str) -> None:
        if self.is_local:
            target = Path(self.path(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, target)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise self._refused(rel, exc) from exc
        else:
            self._put(rel, lambda: self.fs.put_file(str(local), self.path(rel)))

    def _refused(self, rel: str, exc: OSError) -> Exception:
        """A local write that failed: the store's own one-line error where the disk refused it, else ``exc``."""
        if not is_storage_error(exc):
            return exc
        return StoreRefused(
            str(storage_error(Path(self.path(rel)), exc, "a file of the study store", after="then rerun the sweep"))
        )

    def _put(self, rel: str, put: Callable[[], object]) -> None:
        """One put to an object store, retried with backoff when refused; then a StorageError with its message."""
        for attempt in range(1, PUT_TRIES + 1):
            try:
                put()
                return
            except Exception as exc:  # an object store's refusals come as many types (ClientError, OSError, ...)
                if attempt == PUT_TRIES:
                    raise StoreRefused(
                        f"the study store {self.url} refused to write {rel} {PUT_TRIES} times, the last: "
                        f"{type(exc).__name__}: {exc}; check the store (quota, permissions, credentials), then rerun "
                        "the sweep"
                    ) from exc
                delay = PUT_BACKOFF_S * 2 ** (attempt - 1)
                log.warning(
                    "the study store refused %s (%s: %s); retry %d in %.1f s",
                    rel,
                    type(exc).__name__,
                    exc,
                    attempt,
                    delay,
                )
                time.sleep(delay)

    def names(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it is missing)."""
        try:
            entries = self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def files_under(self, rel: str) -> list[str]:
        """Every file below ``rel``, as paths relative to it."""
        base = self.path(rel)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        strip = len(base.rstrip("/")) + 1
        return sorted(str(p)[strip:] for p in found if str(p).startswith(base.rstrip("/") + "/"))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=True)

    def get_dir(self, rel: str, local: Path) -> None:
        """Copy a folder of the store to ``local`` (which must not exist yet)."""
        tmp = local.with_name(f"{local.name}.{uuid.uuid4().hex[:8]}.partial")
        tmp.mkdir(parents=True)
        for name in self.files_under(rel):
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self.path(f"{rel}/{name}"), str(dest))
        os.replace(tmp, local)

    # checkpoints: uploaded whole, manifest last

    def has_checkpoint(self, cell: str) -> bool:
        return self.exists(f"checkpoints/{cell}/{MANIFEST_FILE}")

    def put_checkpoint(self, local: Path, cell: str) -> None:
        """Upload a checkpoint folder, its manifest last: a checkpoint without a manifest in the store is unfinished
        and is replaced by the next upload."""
        rel = f"checkpoints/{cell}"
        if self.is_local and Path(self.path(rel)).resolve() == local.resolve():
            return
        self.remove(rel)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            if path.name != MANIFEST_FILE:
                self.put_file(path, f"{rel}/{path.relative_to(local).as_posix()}")
        self.put_file(local / MANIFEST_FILE, f"{rel}/{MANIFEST_FILE}")

    def checkpoint_dir(self, cell: str, cache: Path) -> Path:
        """A local folder holding the cell's checkpoint: the store's own on a filesystem store, else a copy in
        ``cache`` (kept for the next cell on this node that needs it)."""
        if self.is_local:
            return self.local_path(f"checkpoints/{cell}")
        local = cache / "checkpoints" / cell
        if not (local / MANIFEST_FILE).is_file():
            if local.exists():
                shutil.rmtree(local)
            local.parent.mkdir(parents=True, exist_ok=True)
            self.get_dir(f"checkpoints/{cell}", local)
        return local

    # cells: the outcome, written last

    def cell_outcome(self, cell: str) -> dict[str, Any] | None:
        text = self.read_text(f"cells/{cell}.json")
        return None if text is None else dict(json.loads(text))

    def write_cell_outcome(self, cell: str, outcome: dict[str, Any]) -> None:
        self.write_text(f"cells/{cell}.json", json.dumps(outcome, indent=2) + "\n")

    def clear_cell_outcome(self, cell: str) -> None:
        self.remove(f"cells/{cell}.json")

    def put_logs(self, local: Path, cell: str) -> None:
        if local.is_dir():
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                self.put_file(path, f"logs/{cell}/{path.relative_to(local).as_posix()}")

    def materialize_run(self, cell: str, local: Path) -> Path:
        """A fresh run folder at ``local`` with every record the store holds for the cell (for analyze)."""
        tmp = local.with_name(f"{local.name}.{uuid.uuid4().hex[:8]}.partial")
        restore_run(self, f"runs/{cell}", tmp)
        if local.exists():
            shutil.rmtree(local)
        os.replace(tmp, local)
        return local


def _chunk_seq(name: str) -> int:
    return int(name.split("-", 1)[0])


def restore_run(store: StudyStore, rel: str, local: Path) -> dict[str, int]:
    """Rebuild a run folder at ``local`` from the store: small files as they are, each records file from its chunks
    in order, from its last whole copy on. Returns the next chunk number for each records file."""
    local.mkdir(parents=True, exist_ok=True)
    next_seq: dict[str, int] = {}
    chunked: dict[str, list[str]] = {}
    for name in store.files_under(rel):
        if _CHUNKS + "/" in name:
            chunked.setdefault(name.split(_CHUNKS + "/", 1)[0], []).append(name)
        elif name.rsplit("/", 1)[-1] not in _LOCAL_ONLY and not name.endswith(".tmp"):
            dest = local / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.fs.get_file(store.path(f"{rel}/{name}"), str(dest))
    for records_file, found in chunked.items():
        chunks = [c for c in found if c.endswith(".ndjson")]
        if not chunks:
            continue
        chunks.sort(key=lambda n: _chunk_seq(n.rsplit("/", 1)[-1]))
        next_seq[records_file] = _chunk_seq(chunks[-1].rsplit("/", 1)[-1]) + 1
        wholes = [i for i, c in enumerate(chunks) if c.endswith(_WHOLE)]
        dest = local / records_file
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for chunk in chunks[wholes[-1] if wholes else 0 :]:
                with store.fs.open(store.path(f"{rel}/{chunk}"), "rb") as f:
                    out.write(f.read())
    return next_seq


class StaleAttempt(RuntimeError):
    """Another attempt at the cell (a rerun after this one's node was given up for lost) owns its records now."""


class RunSync:
    """Keeps a cell's run folder in the store while evaluate writes it on this node's disk.

    :meth:`restore` rebuilds the local folder from the store (after a lost node or a restarted driver), then a
    thread flushes every ``every_records`` new records or ``every_s`` seconds: the complete lines appended to each
    records file since the last flush become one chunk; the small files go up whole when they change.
    :meth:`finish` flushes the rest and writes each records file whole. ``on_progress(lines)`` hears how many
    records the local files hold, every ``poll_s``.
    """

    def __init__(
        self,
        store: StudyStore,
        cell: str,
        local: Path,
        *,
        every_records: int,
        every_s: float,
        poll_s: float = 1.0,
        on_progress: Callable[[int], None] | None = None,
        node: str = "-",
    ) -> None:
        self.store, self.rel, self.local = store, f"runs/{cell}", local
        self.every_records, self.every_s, self.poll_s = every_records, every_s, poll_s
        self.on_progress, self.node = on_progress, node
        self.attempt = uuid.uuid4().hex[:8]
        self._offsets: dict[str, int] = {}
        self._lines: dict[str, int] = {}
        self._next_seq: dict[str, int] = {}
        self._small: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Rebuild the local run folder from the store; the records it holds."""
        if self.local.exists():
            shutil.rmtree(self.local)
        # fences off an older attempt's flushes; names this attempt's node for whoever watches the store
        self.store.write_text(f"{self.rel}.attempt", f"{self.attempt} {self.node}\n")
        self._next_seq = restore_run(self.store, self.rel, self.local)
        for path in self._records_files():
            rel = path.relative_to(self.local).as_posix()
            data = path.read_bytes()
            self._offsets[rel], self._lines[rel] = len(data), data.count(b"\n")
        for path in self._small_files():
            self._small[path.relative_to(self.local).as_posix()] = path.read_bytes()
        return sum(self._lines.values())

    def _records_files(self) -> list[Path]:
        folder = self.local / RECORDS_DIR
        return sorted(folder.glob("*.ndjson")) if folder.is_dir() else []

    def _small_files(self) -> list[Path]:
        out = []
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local)
            if rel.name in _LOCAL_ONLY or (rel.parts[0] == RECORDS_DIR and rel.suffix == ".ndjson"):
                continue
            out.append(path)
        return out

    def _new_bytes(self, path: Path) -> tuple[str, bytes]:
        rel = path.relative_to(self.local).as_posix()
        offset = self._offsets.get(rel, 0)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # complete lines only: the writer may be in the middle of one
        return rel, data[:end]

    def pending(self) -> int:
        """Records written locally and not yet in the store."""
        return sum(self._new_bytes(p)[1].count(b"\n") for p in self._records_files())

    def flush(self) -> int:
        """Send what is new to the store; the records sent."""
        with self._lock:
            owner = ((self.store.read_text(f"{self.rel}.attempt") or "").split() or [""])[0]
            if owner != self.attempt:
                raise StaleAttempt(
                    f"{self.rel}: attempt {owner or '?'} took this cell over; this one ({self.attempt}) stops writing"
                )
            sent = 0
            for path in self._small_files():  # run.json first: a resumed run needs it before its records
                rel = path.relative_to(self.local).as_posix()
                data = path.read_bytes()
                if self._small.get(rel) != data:
                    self.store.write_bytes(f"{self.rel}/{rel}", data)
                    self._small[rel] = data
            for path in self._records_files():
                rel, data = self._new_bytes(path)
                if not data:
                    continue
                seq = self._next_seq.get(rel, 0)
                self.store.write_bytes(f"{self.rel}/{rel}{_CHUNKS}/{seq:08d}-{self.attempt}.ndjson", data)
                self._next_seq[rel] = seq + 1
                self._offsets[rel] = self._offsets.get(rel, 0) + len(data)
                n = data.count(b"\n")
                self._lines[rel] = self._lines.get(rel, 0) + n
                sent += n
            return sent

    def local_lines(self) -> int:
        return sum(self._lines.values()) + self.pending()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.poll_s):
            try:
                pending = self.pending()
                if self.on_progress is not None:
                    self.on_progress(sum(self._lines.values()) + pending)
                if pending and (pending >= self.every_records or time.monotonic() - last >= self.every_s):
                    self.flush()
                    last = time.monotonic()
            except StaleAttempt:
                log.error("another attempt owns this cell's records now; this one stops flushing")
                return
            except Exception:  # a store hiccup: the next round tries again, the finish flush reports it
                log.warning("flushing records to the study store failed; retrying", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"runsync-{self.rel}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Flush the rest, then replace the chunks by one whole copy of each records file (written before the older
        chunks are removed, so a reader sees every record at every moment)."""
        self.stop()
        self.flush()
        for path in self._records_files():
            rel = path.relative_to(self.local).as_posix()
            seq = self._next_seq.get(rel, 0)
            folder = f"{self.rel}/{rel}{_CHUNKS}"
            self.store.put_file(path, f"{folder}/{seq:08d}-{self.attempt}{_WHOLE}")
            self._next_seq[rel] = seq + 1
            for name in self.store.names(folder):
                if name.endswith(".ndjson") and _chunk_seq(name) < seq:
                    self.store.remove(f"{folder}/{name}")
