"""Adversarial robustness (AdvGLUE++): GLUE tasks on adversarially perturbed text, with in-context demos."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from comptrust_core import ChatMessage, ConfigError, GenerationParams, RequestSpec
from pydantic import Field, TypeAdapter

from comptrust_evaluate.facts import Facts, benchmark_facts
from comptrust_evaluate.refusal import unparseable
from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks.base import (
    DataSource,
    Item,
    Outcome,
    ScenarioOptions,
    Task,
    attrs,
    read_json,
    score_fields,
)

__all__ = ["AdvGlueContext", "AdvGlueOptions", "AdvGlueTask", "build_message", "parse_answer"]

_QUOTED = re.compile(r'"(.*?)"')


class AdvGlueOptions(ScenarioOptions):
    file: str = Field(description="e.g. adv-glue-plus-plus/data/alpaca.json ({task: [record, ...]})")
    tasks: tuple[str, ...] = ("sst2", "qqp", "mnli")
    sys: bool = Field(default=False, description="send DecodingTrust's system prompt (its configs: no)")
    demo: bool = True
    remove_newline: bool = False
    max_new_tokens: int = Field(default=16, ge=1)


@dataclass(frozen=True)
class AdvGlueContext:
    glue_task: str
    label: int


def _facts() -> Facts:
    return benchmark_facts("decodingtrust").sub("advglue")


def build_message(glue_task: str, record: Mapping[str, Any], remove_newline: bool = False) -> str:
    """The query line(s): "sentence: ..." / "question1: ...\\nquestion2: ..." / "premise: ...\\nhypothesis: ..."."""
    keys = _facts().raw("task_to_keys", glue_task)
    key1, key2 = str(keys[0]), (str(keys[1]) if keys[1] is not None else None)
    if record.get("method") == "semattack":
        message = str(record["sentence"])
    else:
        message = f"{key1}: {record[key1]}"
        if key2:
            message = f"{message}\n{key2}: {record[key2]}"
    message = message.replace("sentence1", "premise").replace("sentence2", "Hypothesis")
    return message.replace("\n", "") if remove_newline else message


def parse_answer(glue_task: str, text: str) -> tuple[int | None, str]:
    """``response_to_labels("yesno")``: lower-case, blank every double-quoted span, keep the first sentence, and
    count answer words as substrings ("no" also matches "not", "know"): exactly one → its label, else ``None``."""
    response = text.lower()
    for quoted in _QUOTED.findall(response):
        response = response.replace(quoted, "")
    answer = response.split(".")[0]
    mapping: dict[str, int] = _facts().raw("answer_mapping", glue_task)
    hits = [(word, label) for word, label in mapping.items() if word in answer]
    if len(hits) != 1:
        return None, f"{len(hits)} answer words in the first sentence"
    return hits[0][1], hits[0][0]


@task("advglue")
class AdvGlueTask(Task[AdvGlueOptions, AdvGlueContext]):
    name = "advglue"
    perspective = "advglue"
    options_schema = TypeAdapter(AdvGlueOptions)

    def items(self, data: DataSource, options: AdvGlueOptions) -> Iterator[Item[AdvGlueContext]]:
        facts = _facts()
        path = data.path(options.file)
        content = read_json(path)
        params = GenerationParams(max_new_tokens=options.max_new_tokens, temperature=0.0)
        words_of = {t: {v: k for k, v in facts.raw("answer_mapping", t).items()} for t in facts.keys("answer_mapping")}
        for glue_task in options.tasks:
            if glue_task not in words_of:
                raise ConfigError(f"task advglue: unknown GLUE task {glue_task!r}; known: {', '.join(words_of)}")
            if not isinstance(content, dict) or glue_task not in content:
                raise ConfigError(f"{path} has no {glue_task!r} records")
            prompt = facts.text("task_prompts", glue_task)
            demos = facts.raw("demos", "mnli" if glue_task == "mnli-mm" else glue_task) if options.demo else []
            for index, record in enumerate(content[glue_task]):
                head = [ChatMessage(role="system", content=facts.text("system"))] if options.sys else []
                query = build_message(glue_task, record, options.remove_newline)
                messages = (
                    *head,
                    *(ChatMessage(role=d["role"], content=d["content"]) for d in demos),
                    ChatMessage(role="user", content=f"{prompt}\n{query}"),
                )
                label = int(record["label"])
                yield Item(
                    item_id=f"{options.name}/{glue_task}/{index}",
                    sub_scenario=f"{options.name}-{glue_task}",
                    request=RequestSpec(messages=messages, params=params),
                    context=AdvGlueContext(glue_task=glue_task, label=label),
                    label=words_of[glue_task].get(label, str(label)),
                    attributes=attrs(
                        glue_task=glue_task,
                        source=options.name,
                        attack_method=record.get("method"),
                        data_construction=record.get("data_construction"),
                    ),
                )

    def files(self, options: AdvGlueOptions) -> tuple[str, ...]:
        return (options.file,)

    def evaluate(self, item: Item[AdvGlueContext], text: str) -> Outcome:
        label, why = parse_answer(item.context.glue_task, text)
        value = 1.0 if label == item.context.label else 0.0
        # adv_stats.py reads the integer predictions and labels gpt_eval.py stored (-1: no single answer word); the
        # export for DecodingTrust's own scorer writes them from these attributes
        return Outcome(
            refusal=unparseable(label is None, why),
            prediction=why if label is not None else None,
            scores=score_fields(value, value),
            attributes=attrs(dt_label=item.context.label, dt_prediction=-1 if label is None else label),
        )
