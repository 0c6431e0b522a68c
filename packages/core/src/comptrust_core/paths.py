"""Where comptrust keeps caches, and the file names of its contracts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ENDPOINTS_FILE",
    "MANIFEST_FILE",
    "RECORDS_DIR",
    "RUN_FILE",
    "cache_dir",
]

MANIFEST_FILE = "comptrust.json"
ENDPOINTS_FILE = "endpoints.json"
RUN_FILE = "run.json"
RECORDS_DIR = "records"


def cache_dir() -> Path:
    """The cache root: ``$COMPTRUST_CACHE``, else ``$XDG_CACHE_HOME/comptrust``, else ``~/.cache/comptrust``."""
    explicit = os.environ.get("COMPTRUST_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "comptrust"
