"""Refusal detectors, a registry of named factories.

Built-ins: DecodingTrust's per-perspective rules, exactly as the benchmark applies them (``dt-toxicity``,
``dt-privacy``, ``dt-privacy-enron``, ``dt-stereotype``, ``dt-adv-demonstration``, ``dt-ood-knowledge``);
``broad``, a normalized rule set of our own (case, curly quotes and apostrophes folded); and ``classifier``, a
rejection-classifier model whose weights are present locally (torch and transformers imported only when it is built).
Perspectives where DecodingTrust counts an unparseable answer as a refusal produce :func:`unparseable` verdicts from
their parsers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.refusal.base import UNPARSEABLE, PhraseDetector, RefusalDetector, Verdict, unparseable

__all__ = [
    "UNPARSEABLE",
    "PhraseDetector",
    "RefusalDetector",
    "Verdict",
    "detector_names",
    "get_detector",
    "refusal_detector",
    "unparseable",
]

_DT = "comptrust_evaluate.refusal.decodingtrust"
DETECTORS: Registry[Callable[[], RefusalDetector]] = Registry(
    "refusal detector",
    {
        "dt-toxicity": _DT,
        "dt-privacy": _DT,
        "dt-privacy-enron": _DT,
        "dt-stereotype": _DT,
        "dt-adv-demonstration": _DT,
        "dt-ood-knowledge": _DT,
        "broad": "comptrust_evaluate.refusal.broad",
        "classifier": "comptrust_evaluate.refusal.classifier",
    },
)


def refusal_detector(name: str) -> Callable[[Callable[[], RefusalDetector]], Callable[[], RefusalDetector]]:
    """Register a detector factory under ``name``."""
    return DETECTORS.register(name)


@cache
def get_detector(name: str) -> RefusalDetector:
    """The detector registered as ``name`` (built once per process)."""
    return DETECTORS.get(name)()


def detector_names() -> list[str]:
    return DETECTORS.names()
