"""Health checks over HTTP, with the standard library only (launchers call them before any event loop exists)."""

from __future__ import annotations

import urllib.error
import urllib.request

__all__ = ["probe"]

# Loopback servers must not be reached through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(base_url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether ``GET {base_url}/health`` answers 200 within ``timeout_s``."""
    try:
        with _OPENER.open(f"{base_url}/health", timeout=timeout_s) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
