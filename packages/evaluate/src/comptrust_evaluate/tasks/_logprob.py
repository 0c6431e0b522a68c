"""What the Beyond-Perplexity tasks share: requests scored from their prompt's own token logprobs, texts chunked to
a maximum length, and text corpora read from .txt or .jsonl files.

A request asks for its prompt's logprobs (TGI ``decoder_input_details``, OpenAI ``echo`` with ``logprobs``) and one
new token, which is ignored. Its record carries ``logprob`` (the sum over the prompt tokens that have one: every
token but the first, which nothing precedes), ``tokens`` (how many) and ``perplexity`` (``exp(-logprob/tokens)``);
the analysis stage adds them up per file, pair or question.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from comptrust_core import Attribute, ConfigError, GenerationParams, RequestSpec, ScoreField

from comptrust_evaluate.refusal import Verdict
from comptrust_evaluate.tasks.base import DataSource, Item, Outcome, ScenarioOptions, Task, attrs, read_jsonl

__all__ = [
    "PROMPT_LOGPROB_PARAMS",
    "LogprobContext",
    "LogprobTask",
    "chunk_items",
    "chunk_text",
    "logprob_item",
    "prompt_scores",
    "read_texts",
]

C = TypeVar("C")
OptionsT = TypeVar("OptionsT", bound=ScenarioOptions)

PROMPT_LOGPROB_PARAMS = GenerationParams(max_new_tokens=1, temperature=0.0, prompt_logprobs=True)
"""Greedy, one new token (servers generate at least one), and the prompt's own logprobs."""

_NOT_JUDGED = Verdict(refused=False, detector="none")


@dataclass(frozen=True)
class LogprobContext:
    """Nothing: a prompt-logprob item's numbers come from the server, its facts are in its attributes."""


def prompt_scores(prompt_logprobs: tuple[float | None, ...]) -> tuple[ScoreField, ...]:
    """``logprob``, ``tokens`` and ``perplexity`` of one prompt, from its per-token logprobs."""
    scored = [lp for lp in prompt_logprobs if lp is not None]
    total = math.fsum(scored)
    perplexity = math.exp(-total / len(scored)) if scored else None
    return (
        ScoreField(name="logprob", value=total),
        ScoreField(name="tokens", value=float(len(scored))),
        ScoreField(name="perplexity", value=perplexity),
    )


def chunk_text(text: str, max_chars: int) -> list[str]:
    """``text`` cut into consecutive pieces of at most ``max_chars`` characters, each cut just after the last
    whitespace that fits (a hard cut where a piece has none); the pieces join back into ``text``."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        window = text[start : start + max_chars]
        cut = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        end = start + (cut + 1 if cut > 0 else max_chars)
        pieces.append(text[start:end])
        start = end
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def logprob_item(
    item_id: str, sub_scenario: str, prompt: str, attributes: tuple[Attribute, ...]
) -> Item[LogprobContext]:
    """One request scored from its prompt's logprobs."""
    request = RequestSpec(prompt=prompt, params=PROMPT_LOGPROB_PARAMS)
    return Item(
        item_id=item_id, sub_scenario=sub_scenario, request=request, context=LogprobContext(), attributes=attributes
    )


def chunk_items(
    prefix: str, sub_scenario: str, text: str, max_chars: int, **facts: object
) -> Iterator[Item[LogprobContext]]:
    """``text``'s chunks (:func:`chunk_text`) as items ``{prefix}/{index}``, with ``facts`` and ``chunk`` as
    attributes."""
    for index, chunk in enumerate(chunk_text(text, max_chars)):
        yield logprob_item(f"{prefix}/{index}", sub_scenario, chunk, attrs(**facts, chunk=index))


def read_texts(data: DataSource, relative: str, field: str = "text", lines: bool = False) -> list[tuple[str, str]]:
    """``(id, text)`` pairs: a ``.txt`` file is one text (id ``0``), or one per line with ``lines`` (ids are line
    indices); a ``.jsonl`` file holds one object per line with ``field`` (and an optional ``id``). Empty texts are
    skipped."""
    path = Path(relative) if Path(relative).is_absolute() else data.path(relative)
    if path.suffix == ".txt":
        content = path.read_text(encoding="utf-8")
        if not lines:
            return [("0", content)] if content.strip() else []
        return [(str(i), line) for i, line in enumerate(content.splitlines()) if line.strip()]
    if path.suffix != ".jsonl":
        raise ConfigError(f"{path}: expected a .txt or .jsonl file")
    out: list[tuple[str, str]] = []
    for lineno, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise ConfigError(f"{path}: line {lineno} has no string field {field!r}")
        if row[field].strip():
            out.append((str(row.get("id", lineno - 1)), row[field]))
    return out


class LogprobTask(Task[OptionsT, C]):
    """A task whose every request is scored from its prompt's logprobs; it never reads generated text."""

    def evaluate(self, item: Item[C], text: str) -> Outcome:
        raise NotImplementedError(f"task {self.name} is scored from prompt logprobs, not generated text")

    def evaluate_prompt(self, item: Item[C], prompt_logprobs: tuple[float | None, ...]) -> Outcome:
        return Outcome(refusal=_NOT_JUDGED, scores=prompt_scores(prompt_logprobs))
