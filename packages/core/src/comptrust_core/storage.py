"""Failed writes, named as what they are: the disk is full (ENOSPC), over quota (EDQUOT), read-only (EROFS) or
failing (EIO), or an object store refused a put. Such a write means the run cannot keep its results, so it stops:
every command turns one into a :class:`StorageError` (exit code 4) whose one line names the path, its filesystem and
the space left there, and says what to do; nothing is reported as done that is not on disk.

Also here: how much space a filesystem has (:func:`free_bytes`, :func:`filesystem_of`), and the check a long write
makes before it starts (:func:`check_free_space`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from comptrust_core.errors import StorageError

__all__ = [
    "STORAGE_ERRNOS",
    "Filesystem",
    "as_os_error",
    "check_free_space",
    "filesystem_of",
    "free_bytes",
    "human_bytes",
    "is_storage_error",
    "storage_errno",
    "storage_error",
]

log = logging.getLogger(__name__)

STORAGE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EIO, errno.EROFS, errno.EFBIG) if code
)
"""The errors of a write that no retry will fix: full, over quota, failing, read-only, file too large."""


_OS_ERROR = re.compile(r"os error (\d+)|\[Errno (\d+)\]")
"""How libraries written in Rust or C (safetensors, tokenizers, polars) spell an OS error in their own exceptions."""


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a write that failed for lack of space or a broken filesystem, found in ``exc`` or what it was
    raised from: an :class:`OSError`'s own, or one a library's exception names in its text (safetensors raises
    ``SafetensorError('... No space left on device (os error 28)')``); None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            if current.errno in STORAGE_ERRNOS:
                return current.errno
        else:
            for match in _OS_ERROR.finditer(str(current)):
                code = int(match.group(1) or match.group(2))
                if code in STORAGE_ERRNOS:
                    return code
        current = current.__cause__ or current.__context__
    return None


def is_storage_error(exc: BaseException) -> bool:
    """Is ``exc`` (or what it was raised from) a write that failed for lack of space or a broken filesystem, or the
    :class:`StorageError` that says so?"""
    return isinstance(exc, StorageError) or storage_errno(exc) is not None


def as_os_error(exc: BaseException) -> OSError:
    """``exc`` as the :class:`OSError` it stands for: itself, the one it was raised from, or one made from its errno."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    code = storage_errno(exc) or errno.EIO
    return OSError(code, os.strerror(code))


def human_bytes(n: float) -> str:
    """``3.0 MiB``, ``512 B``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a file not written yet lives on its folder's filesystem)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


@dataclass(frozen=True)
class Filesystem:
    """Where a path lives: the mount point (where known), its free and total bytes."""

    mount: str
    free: int
    total: int

    def describe(self) -> str:
        return f"filesystem {self.mount}: {human_bytes(self.free)} free of {human_bytes(self.total)}"


def _mount_point(path: Path) -> str:
    current = path
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return str(current)


def filesystem_of(path: Path) -> Filesystem | None:
    """The filesystem ``path`` (or the folder it would be created in) is on; None where that cannot be read."""
    where = _existing(path)
    try:
        stat = os.statvfs(where)
    except OSError:
        return None
    return Filesystem(_mount_point(where), stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize)


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still write on ``path``'s filesystem; None where that cannot be read."""
    found = filesystem_of(path)
    return found.free if found is not None else None


_WHAT_TO_DO = {
    errno.ENOSPC: "free space there (or point the output elsewhere)",
    errno.EIO: "check the disk (dmesg) and the filesystem",
    errno.EROFS: "the filesystem is read-only: remount it writable or point the output elsewhere",
    errno.EFBIG: "the file hit the filesystem's size limit: point the output to a filesystem without it",
}


def storage_error(
    path: Path | str, exc: OSError, what: str, *, after: str = "then rerun the same command"
) -> StorageError:
    """The one-line :class:`StorageError` for ``exc`` raised writing ``path`` (``what``: e.g. ``records``)."""
    where = Path(path)
    found = filesystem_of(where)
    reason = exc.strerror or str(exc)
    code = exc.errno or 0
    todo = _WHAT_TO_DO.get(code, "free space or raise the quota there" if code == getattr(errno, "EDQUOT", -1) else "")
    parts = [f"could not write {what} to {where}: [Errno {code}] {reason}"]
    if found is not None:
        parts[0] += f" ({found.describe()})"
    if todo:
        parts.append(f"{todo}, {after}")
    else:
        parts.append(after)
    error = StorageError("; ".join(parts))
    error.path = str(where)
    error.errno = code
    return error


def check_free_space(path: Path, needed: int, what: str, *, refuse_below: float = 1.0, warn_below: float = 1.2) -> None:
    """Before writing about ``needed`` bytes of ``what`` under ``path``: a :class:`StorageError` when the free space
    is below ``refuse_below`` times that (clearly short), a warning when below ``warn_below`` times it, else
    nothing. Nothing either where the free space cannot be read."""
    found = filesystem_of(path)
    if found is None or needed <= 0:
        return
    if found.free < needed * refuse_below:
        raise StorageError(
            f"{what} needs about {human_bytes(needed)} under {path}, but {found.describe()}; free space there (or "
            "point the output elsewhere) and run it again"
        )
    if found.free < needed * warn_below:
        log.warning(
            "%s needs about %s under %s and %s: it may run out of space",
            what,
            human_bytes(needed),
            path,
            found.describe(),
        )
