"""``bbq``: BBQ multiple choice scored by answer log-likelihood, as Beyond Perplexity scored it.

For each question four prompts are sent for their prompt logprobs: the context alone (``Context: ...\\nQuestion:
...\\nAnswer:``) and the context followed by each answer (`` {answer}``). An answer's log-likelihood is the full
prompt's logprob minus the context's, and its length in tokens the difference of the token counts: the same numbers
as masking the context tokens of one forward pass (Beyond Perplexity's ``multi_qa.py``), as long as the context
tokenizes the same alone and in front of the answer (it does for BPE and SentencePiece tokenizers, the answer
starting with a space). The analysis takes the argmax (unnormalized, or length-normalized) per question and computes
accuracy and the bias scores s_DIS and s_AMB per category.

Each record carries the question (``question``), which prompt it is (``option``: ``context``, ``0``, ``1``, ``2``),
the gold answer, the context condition and question polarity, and each answer's role under two rules: ``role``
(BBQ's: ``target`` when its group is one of ``additional_metadata.stereotyped_groups``, ``unknown``, ``other``, or
``undetermined`` when no answer matches a stereotyped group) and ``role_bp`` (the rule of Beyond Perplexity's code:
``unknown``, ``non`` when the group label contains "non", else ``plain``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError
from pydantic import Field, TypeAdapter

from comptrust_evaluate.facts import benchmark_facts
from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks._logprob import LogprobContext, LogprobTask, logprob_item
from comptrust_evaluate.tasks.base import DataSource, Item, ScenarioOptions, attrs, read_jsonl

__all__ = ["BbqOptions", "BbqTask", "answer_roles"]


class BbqOptions(ScenarioOptions):
    folder: str = Field(default="bbq", description="the folder holding BBQ's <Category>.jsonl files")
    categories: tuple[str, ...] | None = Field(default=None, description="file stems (default: every BBQ category)")


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text).lower()


def answer_roles(answer_info: Sequence[str], stereotyped_groups: Sequence[str], unknown: str) -> list[str]:
    """BBQ's role of each answer (``target``, ``other``, ``unknown``) from its group label: ``target`` where the
    label is a stereotyped group; failing an exact match, where one part of a compound label (``F-Black``) is one
    and no other answer's is. Where no target is found the other answers are ``undetermined`` (the question then
    counts in accuracy but not in the bias scores)."""
    groups = {_norm(g) for g in stereotyped_groups}
    labels = list(answer_info)
    exact = [i for i, label in enumerate(labels) if label != unknown and _norm(label) in groups]
    partial = [
        i
        for i, label in enumerate(labels)
        if label != unknown and any(_norm(part) in groups for part in label.split("-"))
    ]
    target = exact if len(exact) == 1 else partial if len(partial) == 1 else []
    rest = "other" if target else "undetermined"
    return ["unknown" if label == unknown else "target" if i in target else rest for i, label in enumerate(labels)]


def _files(data: DataSource, options: BbqOptions) -> list[Path]:
    folder = data.root / options.folder
    if not folder.is_dir():
        raise ConfigError(
            f"no BBQ folder {folder}; pass --data-dir with a folder holding bbq/<Category>.jsonl "
            "(the data/ folder of github.com/nyu-mll/BBQ)"
        )
    if options.categories is None:
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise ConfigError(f"no .jsonl files in {folder}; BBQ's data/ folder has one per category")
        return files
    return [data.path(f"{options.folder}/{c}.jsonl") for c in options.categories]


def _row(path: Path, index: int, row: Any) -> tuple[str, str, str, list[str], list[str], int]:
    try:
        answers = [str(row[f"ans{i}"]) for i in range(3)]
        info = [str(row["answer_info"][f"ans{i}"][-1]) for i in range(3)]
        label = int(row["label"])
        return str(row["example_id"]), str(row["context"]), str(row["question"]), answers, info, label
    except (KeyError, TypeError, ValueError, IndexError):
        raise ConfigError(
            f"{path}: line {index + 1} is not a BBQ item (example_id, context, question, ans0-2, answer_info, label)"
        ) from None


@task("bbq")
class BbqTask(LogprobTask[BbqOptions, LogprobContext]):
    name = "bbq"
    perspective = "bbq"
    options_schema = TypeAdapter(BbqOptions)

    def items(self, data: DataSource, options: BbqOptions) -> Iterator[Item[LogprobContext]]:
        facts = benchmark_facts("bbq")
        unknown = facts.text("unknown_label")
        for path in _files(data, options):
            category = path.stem
            for index, row in enumerate(read_jsonl(path)):
                example_id, context, question, answers, info, label = _row(path, index, row)
                meta = row.get("additional_metadata") or {}
                roles = answer_roles(info, meta.get("stereotyped_groups") or [], unknown)
                prompt = facts.text("prompt").format(context=context, question=question)
                qid = f"{category}/{example_id}"
                common = attrs(
                    question=qid,
                    category=category,
                    context_condition=row.get("context_condition"),
                    question_polarity=row.get("question_polarity"),
                    gold=label,
                )
                options_ = [("context", prompt, ())] + [
                    (
                        str(i),
                        prompt + facts.text("answer").format(answer=answers[i]),
                        attrs(
                            role=roles[i],
                            role_bp="unknown" if info[i] == unknown else "non" if "non" in info[i] else "plain",
                        ),
                    )
                    for i in range(3)
                ]
                for option, text, extra in options_:
                    item_id = f"{options.name}/{qid}/{option}"
                    yield logprob_item(item_id, category, text, (*common, *attrs(option=option), *extra))
