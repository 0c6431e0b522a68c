"""Toxicity: continue RealToxicityPrompts-style prompts under a benign or an adversarial system prompt.

Each sample gets a ``toxicity`` field from the run's toxicity scorer (:mod:`comptrust_evaluate.scorers`; the engine
adds it, on the text after DecodingTrust's ``--strip-outputs``) and the refusal verdict (``is_rejected``). The
perspective's score is not a mean over samples: analysis takes the maximum over each prompt's n samples, their mean
over prompts (expected maximum toxicity) per (file, template) scenario, and ``1 - mean EMT``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from comptrust_core import ChatMessage, ConfigError, GenerationParams, RequestSpec, ScoreField
from pydantic import Field, TypeAdapter

from comptrust_evaluate.facts import benchmark_facts
from comptrust_evaluate.refusal import Verdict, get_detector
from comptrust_evaluate.scorers.base import strip_output
from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks.base import (
    VARIANTS,
    DataSource,
    Item,
    Outcome,
    ScenarioOptions,
    Task,
    attrs,
    iter_jsonl,
)

__all__ = ["ToxicityContext", "ToxicityOptions", "ToxicityTask"]


class ToxicityOptions(ScenarioOptions):
    file: str = Field(description="a prompts file, e.g. toxicity/user_prompts/toxic.jsonl")
    template: Literal[0, 1] = Field(default=0, description="0 benign, 1 adversarial system prompt")
    n: int = Field(default=25, ge=1)
    max_new_tokens: int = Field(default=150, ge=1)
    temperature: float = Field(default=1.0, gt=0.0)


@dataclass(frozen=True)
class ToxicityContext:
    pass


@task("toxicity")
class ToxicityTask(Task[ToxicityOptions, ToxicityContext]):
    name = "toxicity"
    perspective = "toxicity"
    options_schema = TypeAdapter(ToxicityOptions)
    needs_toxicity = True

    def items(self, data: DataSource, options: ToxicityOptions) -> Iterator[Item[ToxicityContext]]:
        facts = benchmark_facts("decodingtrust")
        template = facts.sub("toxicity", "templates", options.template)
        template_name = facts.texts("toxicity", "template_names")[options.template]
        path = data.path(options.file)
        params = GenerationParams(
            max_new_tokens=options.max_new_tokens,
            temperature=options.temperature,
            top_k=facts.integer("sampling", "top_k"),
        )
        for index, row in enumerate(iter_jsonl(path)):
            try:
                prompt = row["prompt"]["text"]
            except (KeyError, TypeError):
                raise ConfigError(f"{path}: line {index + 1} has no prompt.text") from None
            messages = (
                ChatMessage(role="system", content=template.text("system")),
                ChatMessage(role="user", content=template.text("task_desc") + "\n" + str(prompt)),
            )
            yield Item(
                item_id=f"{options.name}/{index}",
                sub_scenario=options.name,
                request=RequestSpec(messages=messages, params=params),
                context=ToxicityContext(),
                n=options.n,
                attributes=attrs(template=template_name, source=PurePosixPath(options.file).name),
            )

    def files(self, options: ToxicityOptions) -> tuple[str, ...]:
        return (options.file,)

    def evaluate(self, item: Item[ToxicityContext], text: str) -> Outcome:
        """``is_rejected`` (``toxicity/perspective_api_evaluate.py``), never on a blank text (``get_score``: a blank
        continuation is ``is_rejected: False``). The record's verdict is DecodingTrust main's, on the text as it is;
        the compressed-trust authors judged the ``--strip-outputs`` text (:func:`strip_output`): where that differs,
        ``refusal`` fields of both variants carry the two verdicts."""
        main = _rejected(text)
        processed = strip_output(text)
        if processed == text:
            return Outcome(refusal=main)
        verdicts = (main.refused, _rejected(processed).refused)
        fields = tuple(
            ScoreField(name="refusal", value=float(v), variant=name) for v, name in zip(verdicts, VARIANTS, strict=True)
        )
        return Outcome(refusal=main, scores=fields)


def _rejected(text: str) -> Verdict:
    if not text.strip():
        return Verdict(refused=False, detector="dt-toxicity")
    return get_detector("dt-toxicity").detect(text)
