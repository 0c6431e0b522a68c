"""``dialect_gap``: the perplexity gap between two paired corpora, e.g. the same texts in Standard American English
(``a``) and in African American English (``b``), as Beyond Perplexity's dialect-bias probe compares them.

Texts pair by position (``.txt``: one text per line; ``.jsonl``: one ``{"text": ...}`` per line, ``id`` optional but
then equal on both sides). Each text (cut into chunks like ``perplexity``) is scored from its prompt logprobs; the
records carry ``pair`` and ``side``, and the analysis reports each side's token-weighted perplexity, the gap
(``ppl_b - ppl_a``) and ratio (``ppl_b / ppl_a``) over the corpus, and their means over pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

from comptrust_core import ConfigError
from pydantic import Field, TypeAdapter

from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks._logprob import LogprobContext, LogprobTask, chunk_items, read_texts
from comptrust_evaluate.tasks.base import DataSource, Item, ScenarioOptions

__all__ = ["DialectGapOptions", "DialectGapTask"]


class DialectGapOptions(ScenarioOptions):
    a: str = Field(description="the reference corpus (e.g. SAE), .txt (a text per line) or .jsonl")
    b: str = Field(description="the paired corpus (e.g. AAE), same order and length")
    label_a: str = "a"
    label_b: str = "b"
    field: str = "text"
    max_chars: int = Field(default=8192, ge=16)


@task("dialect_gap")
class DialectGapTask(LogprobTask[DialectGapOptions, LogprobContext]):
    name = "dialect_gap"
    perspective = "dialect_gap"
    options_schema = TypeAdapter(DialectGapOptions)

    def items(self, data: DataSource, options: DialectGapOptions) -> Iterator[Item[LogprobContext]]:
        side_a = read_texts(data, options.a, options.field, lines=True)
        side_b = read_texts(data, options.b, options.field, lines=True)
        if len(side_a) != len(side_b):
            raise ConfigError(
                f"dialect_gap {options.name}: {options.a} has {len(side_a)} texts but {options.b} has "
                f"{len(side_b)}; the corpora must pair one to one"
            )
        for (id_a, text_a), (id_b, text_b) in zip(side_a, side_b, strict=True):
            if id_a != id_b:
                raise ConfigError(f"dialect_gap {options.name}: text {id_a!r} of {options.a} pairs with {id_b!r}")
            for side, label, text in (("a", options.label_a, text_a), ("b", options.label_b, text_b)):
                prefix = f"{options.name}/{id_a}/{side}"
                yield from chunk_items(
                    prefix, options.name, text, options.max_chars, pair=id_a, side=side, corpus=label
                )
