"""``custom``: a user's own prompts (``--prompts FILE``), judged only by the ``broad`` refusal rules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import TypeAdapter

from comptrust_evaluate.prompts import load_prompts_file
from comptrust_evaluate.refusal import get_detector
from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks.base import DataSource, Item, Outcome, ScenarioOptions, Task

__all__ = ["CustomContext", "CustomOptions", "CustomTask"]


class CustomOptions(ScenarioOptions):
    file: str


@dataclass(frozen=True)
class CustomContext:
    pass


@task("custom")
class CustomTask(Task[CustomOptions, CustomContext]):
    name = "custom"
    perspective = "custom"
    options_schema = TypeAdapter(CustomOptions)

    def items(self, data: DataSource, options: CustomOptions) -> Iterator[Item[CustomContext]]:
        for entry in load_prompts_file(data.root / options.file):
            yield Item(
                item_id=entry.item_id,
                sub_scenario=options.name,
                request=entry.request,
                context=CustomContext(),
                n=entry.n,
            )

    def evaluate(self, item: Item[CustomContext], text: str) -> Outcome:
        return Outcome(refusal=get_detector("broad").detect(text))
