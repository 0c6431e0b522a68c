"""Toxicity scorers, a registry with one lazily imported module per scorer.

* ``offline`` (the default): alt-profanity-check, a linear model whose weights ship inside its PyPI wheel
  (``comptrust-evaluate[toxicity]``). No network, no GPU; it measures profanity and offensive words, not toxicity in
  Perspective's sense, so its numbers are not comparable with the papers' (see the README).
* ``perspective``: Google's Perspective API (DecodingTrust's scorer), TOXICITY summary score, at most ``qps``
  requests per second (1 by default, the API's default quota). **The API closes at the end of 2026.**
* ``hf``: any Hugging Face text-classification model whose weights are on this machine (Detoxify's
  ``unitary/toxic-bert``, ``s-nlp/roberta_toxicity_classifier``, ...); needs torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.scorers.base import (
    ScorerError,
    ScorerOptions,
    ToxicityScorer,
    parse_scorer_options,
    strip_output,
    toxicity_fields,
)

__all__ = [
    "DEFAULT_SCORER",
    "NO_SCORER",
    "ScorerError",
    "ScorerFactory",
    "ScorerOptions",
    "ToxicityScorer",
    "get_scorer",
    "parse_scorer_options",
    "scorer_names",
    "strip_output",
    "toxicity_fields",
    "toxicity_scorer",
]

DEFAULT_SCORER = "offline"
NO_SCORER = "none"
"""``--toxicity-scorer none``: toxicity records keep their refusal verdict but get no toxicity score."""

ScorerFactory = Callable[[Mapping[str, Any]], ToxicityScorer]
SCORERS: Registry[ScorerFactory] = Registry(
    "toxicity scorer",
    {name: f"comptrust_evaluate.scorers.{name}" for name in ("offline", "perspective", "hf")},
)


def toxicity_scorer(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register a scorer factory (options mapping → scorer) under ``name``."""
    return SCORERS.register(name)


def get_scorer(name: str, options: Mapping[str, Any] | None = None) -> ToxicityScorer:
    """A new scorer ``name`` built with ``options``; unknown names and bad options are :class:`ScorerError`s."""
    return SCORERS.get(name)(options or {})


def scorer_names() -> list[str]:
    return SCORERS.names()
