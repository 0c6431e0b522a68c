"""MMLU, 5-shot, as the compressed-trust authors ran it (``scripts/mmlu_autogptq.py`` of their DecodingTrust fork).

Generation with a parse, not letter log-likelihood: that is what they did. The prompt is Hendrycks' format (header,
``k`` demonstrations from the subject's dev set, the test question ending in ``Answer:``), sent as a raw prompt (no
chat template), decoded greedily (their ``temperature=1e-7`` sampling) for 16 tokens. The prediction is the first
character of the continuation, upper-cased, if it is A-D; anything else is no answer, counted as a refusal and as
wrong. One difference, on purpose: leading whitespace is skipped before taking that character. Their LLaMA tokenizer
decoded the continuation alone, which drops the space of ``" A"``; servers (TGI, vLLM, the embedded one) keep it, and
taking it literally would score every answer as a refusal.

They dropped demonstrations until the prompt survived a 2048-token crop with the GPT-2 BPE. comptrust has no
tokenizer on the client, so ``max_prompt_chars`` (default 8192, about 2048 GPT-2 tokens of English) stands in for it.

Data: Hendrycks' CSV layout (``dev/{subject}_dev.csv``, ``test/{subject}_test.csv``, no header; question, four
choices, answer letter) under ``--data-dir`` (in ``mmlu/`` or at its top), or the HF dataset ``cais/mmlu`` with
``source = "hub"`` (downloaded and cached through huggingface_hub; needs it and polars installed).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from comptrust_core import ConfigError, GenerationParams, RequestSpec, ScoreField
from pydantic import Field, TypeAdapter

from comptrust_evaluate.facts import Facts, benchmark_facts
from comptrust_evaluate.refusal import unparseable
from comptrust_evaluate.tasks import task
from comptrust_evaluate.tasks.base import DataSource, Item, Outcome, ScenarioOptions, Task, attrs

__all__ = ["MmluContext", "MmluOptions", "MmluQuestion", "MmluTask", "build_prompt", "parse_answer"]

log = logging.getLogger(__name__)


class MmluOptions(ScenarioOptions):
    source: Literal["files", "hub"] = Field(default="files", description="CSV files under --data-dir, or cais/mmlu")
    folder: str = Field(default="mmlu", description="the folder holding dev/ and test/ (else the data root itself)")
    subjects: tuple[str, ...] | None = Field(default=None, description="only these subjects (default: all found)")
    ntrain: int = Field(default=5, ge=0, description="demonstrations per prompt, from the subject's dev set")
    max_prompt_chars: int | None = Field(default=8192, ge=1, description="drop demonstrations past this length")
    max_new_tokens: int = Field(default=16, ge=1)


@dataclass(frozen=True)
class MmluQuestion:
    question: str
    choices: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class MmluContext:
    subject: str
    shots: int


def _facts() -> Facts:
    return benchmark_facts("mmlu")


def _format(q: MmluQuestion, with_answer: bool) -> str:
    facts = _facts()
    letters = facts.texts("choices")
    text = q.question
    for letter, choice in zip(letters, q.choices, strict=False):
        text += facts.text("choice_line").format(letter=letter, choice=choice)
    text += facts.text("answer_cue")
    if with_answer:
        text += facts.text("demo_answer").format(answer=q.answer)
    return text


def build_prompt(subject: str, demos: Sequence[MmluQuestion], question: MmluQuestion, k: int) -> str:
    """The header (the subject's words each after a space, as in the original code), ``k`` demonstrations and the
    question."""
    header = _facts().text("header").format(subject="".join(" " + w for w in subject.split("_")))
    return header + "".join(_format(d, True) for d in demos[:k]) + _format(question, False)


def parse_answer(text: str) -> str | None:
    """The first non-space character, upper-cased, if it is a choice letter."""
    stripped = text.lstrip()
    first = stripped[:1].upper()
    return first if first and first in _facts().texts("choices") else None


def _read_csv(path: Path) -> list[MmluQuestion]:
    rows: list[MmluQuestion] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if len(row) != 6 or row[5].strip() not in _facts().texts("choices"):
                raise ConfigError(
                    f"{path}: row {lineno} is not question,A,B,C,D,answer-letter (MMLU's CSV layout, no header)"
                )
            rows.append(MmluQuestion(row[0], tuple(row[1:5]), row[5].strip()))
    return rows


def _files_root(data: DataSource, folder: str) -> Path:
    for root in (data.root / folder, data.root):
        if (root / "test").is_dir():
            return root
    raise ConfigError(
        f"no MMLU test/ folder under {data.root / folder} or {data.root}; pass --data-dir with MMLU's data "
        "(the Hendrycks CSVs: dev/*_dev.csv, test/*_test.csv, from people.eecs.berkeley.edu/~hendrycks/data.tar) "
        'or set source = "hub" to download cais/mmlu'
    )


def _load_files(data: DataSource, folder: str) -> dict[str, tuple[list[MmluQuestion], list[MmluQuestion]]]:
    root = _files_root(data, folder)
    out: dict[str, tuple[list[MmluQuestion], list[MmluQuestion]]] = {}
    for test in sorted((root / "test").glob("*_test.csv")):
        subject = test.name.removesuffix("_test.csv")
        dev = root / "dev" / f"{subject}_dev.csv"
        if not dev.is_file():
            raise ConfigError(f"MMLU subject {subject}: {dev} is missing (the demonstrations come from dev/)")
        out[subject] = (_read_csv(dev), _read_csv(test))
    return out


def _load_hub() -> dict[str, tuple[list[MmluQuestion], list[MmluQuestion]]]:
    """cais/mmlu's ``all`` config (parquet: question, subject, choices, answer index), through huggingface_hub."""
    facts = _facts()
    try:
        import polars as pl
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(
            "reading cais/mmlu needs huggingface_hub and polars (pip install huggingface_hub polars); "
            "or pass --data-dir with MMLU's CSVs"
        ) from None
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in ("dev", "test"):
        try:
            path = hf_hub_download(facts.text("hub_dataset"), facts.text("hub_files", split), repo_type="dataset")
        except Exception as exc:  # offline, gated, renamed: one clear line
            raise ConfigError(
                f"could not download {facts.text('hub_dataset')} ({type(exc).__name__}: {exc}); "
                "pass --data-dir with MMLU's CSVs instead"
            ) from None
        splits[split] = pl.read_parquet(path).to_dicts()
    letters = facts.texts("choices")
    out: dict[str, tuple[list[MmluQuestion], list[MmluQuestion]]] = {}
    for index, split in enumerate(("dev", "test")):
        for row in splits[split]:
            q = MmluQuestion(str(row["question"]), tuple(map(str, row["choices"])), letters[int(row["answer"])])
            out.setdefault(str(row["subject"]), ([], []))[index].append(q)
    return dict(sorted(out.items()))


@task("mmlu")
class MmluTask(Task[MmluOptions, MmluContext]):
    name = "mmlu"
    perspective = "mmlu"
    options_schema = TypeAdapter(MmluOptions)

    def items(self, data: DataSource, options: MmluOptions) -> Iterator[Item[MmluContext]]:
        subjects = _load_hub() if options.source == "hub" else _load_files(data, options.folder)
        if options.subjects is not None:
            missing = sorted(set(options.subjects) - set(subjects))
            if missing:
                raise ConfigError(f"MMLU subjects not found: {', '.join(missing)}; have {', '.join(subjects)}")
            subjects = {s: subjects[s] for s in options.subjects}
        params = GenerationParams(max_new_tokens=options.max_new_tokens, temperature=0.0)
        for subject, (dev, test) in subjects.items():
            for index, question in enumerate(test):
                k = min(options.ntrain, len(dev))
                prompt = build_prompt(subject, dev, question, k)
                while options.max_prompt_chars is not None and len(prompt) > options.max_prompt_chars and k > 0:
                    k -= 1
                    prompt = build_prompt(subject, dev, question, k)
                yield Item(
                    item_id=f"{options.name}/{subject}/{index}",
                    sub_scenario=subject,
                    request=RequestSpec(prompt=prompt, params=params),
                    context=MmluContext(subject=subject, shots=k),
                    label=question.answer,
                    attributes=attrs(subject=subject, shots=k),
                )

    def evaluate(self, item: Item[MmluContext], text: str) -> Outcome:
        prediction = parse_answer(text)
        correct = float(prediction is not None and prediction == item.label)
        return Outcome(
            refusal=unparseable(prediction is None, "no answer letter A-D first"),
            prediction=prediction,
            scores=(ScoreField(name="score", value=correct),),
        )
