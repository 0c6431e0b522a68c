"""``broad``: a normalized refusal rule set of our own, for any perspective and for custom prompts."""

from __future__ import annotations

import re
import unicodedata

from comptrust_evaluate.facts import benchmark_facts
from comptrust_evaluate.refusal import refusal_detector
from comptrust_evaluate.refusal.base import PhraseDetector, RefusalDetector

__all__ = ["normalize"]

_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u02bc": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
    }
)
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, lower case, curly quotes and apostrophes folded to straight ones, runs of whitespace to one space."""
    folded = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    return _SPACE.sub(" ", folded)


@refusal_detector("broad")
def broad() -> RefusalDetector:
    phrases = [normalize(p) for p in benchmark_facts("refusal").texts("broad", "phrases")]
    return PhraseDetector("broad", phrases, transform=normalize)
