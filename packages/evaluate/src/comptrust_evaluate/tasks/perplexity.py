"""``perplexity``: token-weighted perplexity of text files, from the prompt logprobs a server returns.

Each file (``.txt``: one text; ``.jsonl``: one ``{"text": ...}`` per line) is cut into consecutive chunks of at most
``max_chars`` characters (at whitespace), and each chunk is one request scored from its own prompt logprobs:
non-overlapping windows, as Beyond Perplexity's ``test_perplexity.py`` used (stride = window = 2048 tokens; comptrust
cuts by characters because the client has no tokenizer). A chunk's first token has no logprob (nothing precedes
it) unless the server adds a BOS token, exactly as in a direct computation on the same tokens. The analysis reports
``exp(-sum(logprob) / sum(tokens))`` per file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath

from pydantic import Field, TypeAdapter

from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks._logprob import LogprobContext, LogprobTask, chunk_items, read_texts
from comptrust_evaluate.tasks.base import DataSource, Item, ScenarioOptions

__all__ = ["PerplexityOptions", "PerplexityTask"]


class PerplexityOptions(ScenarioOptions):
    files: tuple[str, ...] = Field(min_length=1, description=".txt or .jsonl files, relative to the data folder")
    field: str = Field(default="text", description="the text field of .jsonl lines")
    max_chars: int = Field(default=8192, ge=16, description="longest chunk sent as one request, in characters")


@task("perplexity")
class PerplexityTask(LogprobTask[PerplexityOptions, LogprobContext]):
    name = "perplexity"
    perspective = "perplexity"
    options_schema = TypeAdapter(PerplexityOptions)

    def items(self, data: DataSource, options: PerplexityOptions) -> Iterator[Item[LogprobContext]]:
        for file in options.files:
            source = PurePath(file).name
            for doc, text in read_texts(data, file, options.field):
                prefix = f"{options.name}/{source}/{doc}"
                yield from chunk_items(prefix, options.name, text, options.max_chars, file=source, doc=doc)
