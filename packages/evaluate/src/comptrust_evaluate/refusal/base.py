"""Refusal verdicts and the detector interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["UNPARSEABLE", "PhraseDetector", "RefusalDetector", "Verdict", "unparseable"]

UNPARSEABLE = "dt-unparseable"
"""The detector name for perspectives where DecodingTrust counts an answer it cannot parse as a refusal."""


@dataclass(frozen=True)
class Verdict:
    """Whether a response is a refusal, which detector said so, and the rule (phrase) that fired."""

    refused: bool
    detector: str
    rule: str | None = None


def unparseable(refused: bool, rule: str | None = None) -> Verdict:
    """The verdict of a task whose parser found (``refused=True``) or did not find an unparseable answer."""
    return Verdict(refused=refused, detector=UNPARSEABLE, rule=rule if refused else None)


class RefusalDetector(ABC):
    """Looks at a response text and says whether it refuses."""

    name: str
    blocking: bool = False
    """True for a detector slow enough to stall an event loop (a model): the engine runs it on a worker thread."""

    @abstractmethod
    def detect(self, text: str) -> Verdict: ...


class PhraseDetector(RefusalDetector):
    """Refusal if any phrase occurs in the (optionally transformed) text; the first phrase in list order is the rule."""

    def __init__(self, name: str, phrases: Iterable[str], transform: Callable[[str], str] | None = None) -> None:
        self.name = name
        self.phrases = tuple(phrases)
        self._transform = transform

    def first_match(self, text: str) -> str | None:
        haystack = self._transform(text) if self._transform else text
        for phrase in self.phrases:
            if phrase in haystack:
                return phrase
        return None

    def detect(self, text: str) -> Verdict:
        rule = self.first_match(text)
        return Verdict(refused=rule is not None, detector=self.name, rule=rule)
