"""Folder helpers: build a folder under a temporary name beside its final place, rename it in at the very end.

A reader never sees a half-written folder: until the rename, the work lives in a hidden ``.<name>.tmp-*`` sibling
that is removed on any failure (including Ctrl-C). Content hashes of weight files live here too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["publish_dir", "sha256_file", "staging_dir", "weight_files", "weights_hash"]

log = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; remove it if the block raises (anything, Ctrl-C included).

    The block is expected to end with :func:`publish_dir`; whatever is left of the temporary folder afterwards
    (nothing, after a successful publish) is removed too.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # Not tempfile.mkdtemp: its 0700 mode would survive the rename; a plain mkdir honours the umask.
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            break
        except FileExistsError:  # pragma: no cover - a 32-bit random collision
            continue
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(tmp: Path, final: Path, *, keep_existing: bool) -> bool:
    """Rename ``tmp`` to ``final``. Return True if ours is now at ``final``.

    ``keep_existing=True`` (caches): when another process published ``final`` first, keep theirs, drop ours and
    return False. ``keep_existing=False`` (outputs): an existing ``final`` is an error (FileExistsError).
    """
    _honour_umask(tmp)
    if os.path.lexists(final):
        if keep_existing:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise FileExistsError(f"{final} appeared while it was being written; nothing was replaced")
    try:
        os.rename(tmp, final)
    except OSError:
        if keep_existing and final.is_dir():
            # Lost a race with a concurrent writer of the same cache entry: theirs is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    return True


def _honour_umask(folder: Path) -> None:
    """Give every file in ``folder`` the mode a plain ``open()`` would have.

    Some writers (safetensors, atomic-write helpers using ``mkstemp``) create 0600 files; a checkpoint must stay
    readable by the server that loads it, which may run as another user (a container).
    """
    mask = os.umask(0o022)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """The ``*.safetensors`` files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def weights_hash(folder: Path) -> str:
    """``sha256:<hex>`` over the weight files: the sha256 of the lines ``<file name> <file sha256>``, sorted by name.

    Independent of the folder's location and of its non-weight files (tokenizer, config, manifest).
    """
    files = weight_files(folder)
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {folder}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    log.debug("hashed %d weight file(s) in %s", len(files), folder)
    return "sha256:" + digest.hexdigest()
