"""The English prose the project wrote and ships (see data/README.md): a calibration part and a held-out part."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Literal

__all__ = ["TextPart", "project_text", "project_text_label"]

TextPart = Literal["calibration", "heldout"]


def project_text(part: TextPart) -> str:
    """The text of ``part``: ``heldout`` for perplexity, ``calibration`` for calibration. Never mix them up."""
    return files("comptrust_compress").joinpath("data", f"{part}.txt").read_text(encoding="utf-8")


def project_text_label(part: TextPart) -> str:
    """What the manifest says a measurement used, e.g. ``comptrust:heldout.txt (sha256:1a2b3c4d5e6f)``."""
    digest = hashlib.sha256(project_text(part).encode("utf-8")).hexdigest()
    return f"comptrust:{part}.txt (sha256:{digest[:12]})"
