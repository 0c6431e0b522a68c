"""Small file helpers: atomic writes and schema-version checks."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from comptrust_core.errors import SchemaVersionError

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_schema_version", "read_json"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it into place: a failed
    write (a full disk) leaves the previous ``path`` as it was and no temporary file behind."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write_text` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file; a missing or malformed file becomes a clear error naming ``what`` and the path."""
    from comptrust_core.errors import ComptrustError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ComptrustError(f"{what} not found: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ComptrustError(f"{what} {path} is not valid JSON ({exc}); restore or regenerate it") from exc


def check_schema_version(found: object, supported: int, what: str, path: Path) -> None:
    """Refuse files written by a newer schema than this comptrust understands."""
    if not isinstance(found, int):
        raise SchemaVersionError(f"{what} {path} has no integer schema_version; it was not written by comptrust")
    if found > supported:
        raise SchemaVersionError(
            f"{what} {path} has schema_version {found}, newer than this comptrust reads ({supported}); "
            "upgrade comptrust (uv sync) to read it"
        )
