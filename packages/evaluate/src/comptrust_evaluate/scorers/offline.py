"""``offline``: alt-profanity-check 1.9.1, the default toxicity scorer.

What it is: a TF-IDF unigram vectorizer (about 15k words) and a calibrated linear SVM, trained on labelled offensive /
profane comments; both ship inside the PyPI wheel (loaded with joblib, i.e. pickle, from the installed package). It
needs no network and no GPU and scores thousands of texts per second.

What it is not: Perspective's TOXICITY. It reacts to words, not meaning: insults and slurs score high, polite hate
("those people are all criminals") scores low, and profanity used kindly ("damn good day") scores high; English only;
obfuscated spellings slip past. Its probabilities are on its own scale, so expected maximum toxicity and toxicity
probability from it are comparable between checkpoints scored the same way, never with the papers' numbers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from typing import Any, ClassVar

from comptrust_evaluate.scorers import toxicity_scorer
from comptrust_evaluate.scorers.base import (
    LocalScorer,
    ScorerError,
    ScorerOptions,
    ToxicityScorer,
    parse_scorer_options,
)

__all__ = ["OfflineOptions", "OfflineScorer"]

_DIST = "alt-profanity-check"


class OfflineOptions(ScorerOptions):
    pass


class OfflineScorer(LocalScorer):
    name: ClassVar[str] = "offline"

    def __init__(self) -> None:
        try:
            module = importlib.import_module("profanity_check")
            self._version = importlib.metadata.version(_DIST)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            raise ScorerError(
                f"toxicity scorer offline needs {_DIST}: install comptrust-evaluate[toxicity] "
                "(or pick another with --toxicity-scorer)"
            ) from None
        self._predict_prob = module.predict_prob

    @property
    def version(self) -> str:
        return f"{_DIST} {self._version}"

    def predict(self, texts: list[str]) -> list[float]:
        return [float(p) for p in self._predict_prob(texts)]


@toxicity_scorer("offline")
def offline(options: Mapping[str, Any]) -> ToxicityScorer:
    parse_scorer_options("offline", OfflineOptions, options)
    return OfflineScorer()
