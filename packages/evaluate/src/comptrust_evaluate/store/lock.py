"""One process at a time per run directory: ``RUN_DIR/.lock``, an exclusive ``flock`` that also names its holder.

The kernel releases a ``flock`` when its holder exits, however it exits, so the lock is never left held by a dead
process. The file keeps the holder's pid while it is held and is emptied on a clean release: a pid still in an unheld
lock file means its process died holding it (kill -9, a crash), and the next process takes it over with a warning.
The file is never deleted, so two processes can never hold locks on two different files of the same name.

Within one process the lock is re-entrant: an ``evaluate`` run holds it from loading its records to compacting them,
and the compaction it calls takes it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from comptrust_core import RunDirError

__all__ = ["LOCK_FILE", "lock_run_dir"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # run dir (resolved) -> (open fd, nesting depth), for this process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _acquire(run_dir: Path, action: str) -> int:
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(
            f"cannot create the lock file {path} ({exc.strerror}); check the folder's permissions"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(f"cannot lock {path} ({exc.strerror})") from None
        who = f"process {holder}" if holder is not None else "another process"
        raise RunDirError(
            f"run directory {run_dir} is in use by {who} (it holds {path}); cannot {action} it at the same time. "
            "Wait for that process to finish, or stop it"
        ) from None
    stale = _read_pid(fd)
    if stale is not None and stale != os.getpid():
        state = "is no longer running" if not _pid_alive(stale) else "no longer holds it"
        log.warning("%s: taking over the lock left by process %d, which %s", run_dir, stale, state)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # a clean release: no pid left behind to be taken for a stale holder
    finally:
        os.close(fd)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, action: str = "use") -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; a :class:`RunDirError` naming the holder's pid if another process has it.

    ``action`` ("evaluate", "compact") says in the error what could not be done."""
    key = run_dir.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
    else:
        _held[key] = (_acquire(run_dir, action), 1)
    try:
        yield
    finally:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
        else:
            del _held[key]
            _release(fd)
