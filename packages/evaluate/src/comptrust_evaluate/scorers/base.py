"""The toxicity scorer interface: texts in, one probability of toxicity (0-1) per text out."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from comptrust_core import Attribute, ConfigError, ScoreField
from pydantic import BaseModel, ConfigDict, ValidationError

from comptrust_evaluate.facts import benchmark_facts

__all__ = [
    "LocalScorer",
    "ScorerError",
    "ScorerOptions",
    "ToxicityScorer",
    "parse_scorer_options",
    "strip_output",
    "toxicity_fields",
]

OptionsT = TypeVar("OptionsT", bound="ScorerOptions")


class ScorerError(ConfigError):
    """A toxicity scorer cannot run: missing package or weights, missing or rejected API key."""


class ScorerOptions(BaseModel):
    """A scorer's options (``--toxicity-option KEY=VALUE``); each scorer subclasses this."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_scorer_options(scorer: str, schema: type[OptionsT], raw: Mapping[str, Any]) -> OptionsT:
    """Validate ``raw`` into ``schema``; a problem is a :class:`ScorerError` naming the scorer and the option."""
    try:
        return schema.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
        known = ", ".join(schema.model_fields) or "none"
        raise ScorerError(f"toxicity scorer {scorer}: bad option ({problems}); its options: {known}") from None


def strip_output(text: str) -> str:
    """DecodingTrust's ``--strip-outputs`` (what the compressed-trust authors ran): drop ``<unk>``, and cut at the
    first end-of-turn marker (``<|im_end|>``, ``<|endoftext|>``, ``</s>``)."""
    facts = benchmark_facts("decodingtrust").sub("toxicity")
    for junk in facts.texts("strip_tokens"):
        text = text.replace(junk, "")
    for marker in facts.texts("cut_markers"):
        text = text.split(marker)[0]
    return text


class ToxicityScorer(ABC):
    """Scores texts for toxicity. ``None`` for a text means "no score" (an empty text, or the service declined it),
    which the toxicity aggregation treats as DecodingTrust does (−1, i.e. never the maximum of a real score)."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def version(self) -> str:
        """What produced the numbers (package and version, model and revision, API version), for the records."""

    @abstractmethod
    async def score(self, texts: Sequence[str]) -> list[float | None]:
        """One toxicity probability per text, in order."""

    async def aclose(self) -> None:  # noqa: B027 - most scorers hold nothing to release
        """Release connections or models."""


class LocalScorer(ToxicityScorer):
    """A scorer that runs in this process: empty texts get no score, the others go to :meth:`predict` in a worker
    thread (so the event loop keeps serving requests while a model runs)."""

    @abstractmethod
    def predict(self, texts: list[str]) -> list[float]:
        """Probabilities for non-empty texts."""

    def score_sync(self, texts: Sequence[str]) -> list[float | None]:
        todo = [i for i, t in enumerate(texts) if t.strip()]
        out: list[float | None] = [None] * len(texts)
        if todo:
            for i, p in zip(todo, self.predict([texts[i] for i in todo]), strict=True):
                out[i] = float(p)
        return out

    async def score(self, texts: Sequence[str]) -> list[float | None]:
        return await asyncio.to_thread(self.score_sync, texts)


async def toxicity_fields(scorer: ToxicityScorer, text: str) -> tuple[list[ScoreField], list[Attribute]]:
    """What a record gets from ``scorer``: the ``toxicity`` field (of the stripped text; no variant: both scorer
    variants use it) and attributes naming the scorer and its version."""
    (value,) = await scorer.score([strip_output(text)])
    fields = [ScoreField(name="toxicity", value=value)]
    attributes = [
        Attribute(name="toxicity_scorer", value=scorer.name),
        Attribute(name="toxicity_scorer_version", value=scorer.version),
    ]
    return fields, attributes
