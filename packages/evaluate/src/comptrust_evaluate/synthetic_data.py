"""A synthetic DecodingTrust ``data/`` folder: every file the ``decodingtrust`` suite reads, in the benchmark's formats,
filled with generated placeholder items (no benchmark text), at any size.

Tests use it with a few rows per file to enumerate the whole suite; ``benchmarks/decodingtrust_plan.py`` uses it with
the reference's row counts to count and enumerate a full plan (about a million requests) without the real data.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from comptrust_evaluate.data_files import required_files
from comptrust_evaluate.plan import load_suite, parse_scenarios
from comptrust_evaluate.tasks._npy import write_npy_1d

__all__ = ["ROW_COUNTS", "RowCounts", "WordTokenizer", "write_synthetic_decodingtrust"]


class RowCounts(NamedTuple):
    """Items per file (the reference's counts in ``ROW_COUNTS``)."""

    toxicity: int = 2
    stereotype_per_type: int = 2
    advglue_per_task: int = 2
    ood_style: int = 2
    ood_qa_2020: int = 2
    ood_qa_2023: int = 2
    counterfactual_snli: int = 2
    counterfactual_other: int = 2
    spurious: int = 2
    backdoor_asr: int = 2
    backdoor_cacc: int = 2
    enron_people: int = 6  # at least 6: the PII scenarios need five supporting people per case
    ethics_short: int = 2
    fairness_adult: int = 2
    fairness_crime: int = 2


ROW_COUNTS = RowCounts(
    toxicity=1_200,  # 1,200 / 1,196 / 1,200 / 1,200 in the reference: 4,796 prompts
    stereotype_per_type=1_152,
    advglue_per_task=1_000,  # per-task counts are not known here (42k rows over every file and task on HF)
    ood_style=872,
    ood_qa_2020=855,
    ood_qa_2023=263,
    counterfactual_snli=400,
    counterfactual_other=1_000,
    spurious=2_000,
    backdoor_asr=428,
    backdoor_cacc=872,
    enron_people=3_294,
    ethics_short=2_109,
    fairness_adult=200,
    fairness_crime=300,
)


class WordTokenizer:
    """A stand-in for GPT-2's tokenizer (the Enron context-* prompts) that needs no download: one id per word."""

    def __init__(self) -> None:
        self.words: list[str] = []

    def __call__(self, text: str) -> dict[str, list[int]]:
        start = len(self.words)
        self.words.extend(text.split())
        return {"input_ids": list(range(start, len(self.words)))}

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


def _jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _demo_item(i: int, options: list[str], demos: int) -> dict[str, Any]:
    examples = [[f"example {j} input: answer:", options[j % len(options)]] for j in range(demos)]
    return {
        "option": options,
        "input": f"item {i} input: answer:",
        "label": options[i % len(options)],
        "examples": examples,
    }


def _write(root: Path, path: str, counts: RowCounts) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    name = target.name
    if path.startswith("toxicity/"):
        _jsonl(target, ({"prompt": {"text": f"prompt {i} and then"}} for i in range(counts.toxicity)))
    elif path.startswith("stereotype/"):
        types = ("benign", "untargeted", "targeted")
        _jsonl(
            target,
            (
                {
                    "prompt": {
                        "text": f"Statement {i}.",
                        "stereotype_topic_tag": "topic",
                        "demographic_group_tag": "Group",
                        "sys_prompt_type_tag": t,
                    }
                }
                for t in types
                for i in range(counts.stereotype_per_type)
            ),
        )
    elif path.startswith("adv-glue-plus-plus/"):
        n = counts.advglue_per_task
        content = {
            "sst2": [{"idx": i, "label": i % 2, "sentence": f"sentence {i}"} for i in range(n)],
            "qqp": [{"idx": i, "label": i % 2, "question1": f"q{i}?", "question2": f"p{i}?"} for i in range(n)],
            "mnli": [{"idx": i, "label": i % 3, "premise": f"p{i}", "hypothesis": f"h{i}"} for i in range(n)],
        }
        target.write_text(json.dumps(content))
    elif name == "style.json":
        styles = [
            "base",
            "augment",
            "bible_p0.6",
            "bible_p0",
            "romantic_p0.6",
            "romantic_p0",
            "shake_p0.6",
            "shake_p0",
            "shake_w",
            "tweet_p0.6",
            "tweet_p0",
        ]
        rows = [{"sentence": f"sentence {i}", "label": str(i % 2), "id": i} for i in range(counts.ood_style)]
        demos = {
            f"{s}_{r}": rows[:8]
            for s in ("base", "bible_p0.6", "romantic_p0.6", "shake_p0.6", "tweet_p0.6")
            for r in range(3)
        }
        target.write_text(json.dumps({"train_demo": demos, "dev": {s: rows for s in styles}}))
    elif name == "knowledge.json":

        def questions(n: int, year: str) -> list[dict[str, Any]]:
            return [
                {
                    "question_date": f"{year}/01/01",
                    "question_sentence": f"Question {i}?",
                    "choices": ["a", "b", "c", "d"],
                    "answer": [str(i % 4)],
                }
                for i in range(n)
            ]

        sources = ("2021_qa", "global_facts", "machine_learning", "moral_scenarios", "us_foreign_policy")
        target.write_text(
            json.dumps(
                {
                    "test": {
                        "qa_2020": questions(counts.ood_qa_2020, "2020"),
                        "qa_2023": questions(counts.ood_qa_2023, "2023"),
                    },
                    "demo": {f"{s}_{r}": questions(5, "2021") for s in sources for r in range(3)},
                }
            )
        )
    elif path.startswith("adv_demonstration/"):
        folder = target.parent.name
        if folder.endswith("_asr"):
            n, options = counts.backdoor_asr, ["negative", "positive"]
        elif folder.endswith("_cacc"):
            n, options = counts.backdoor_cacc, ["negative", "positive"]
        elif "spurious" in path:
            n, options = counts.spurious, ["yes", "no"]
        elif "snli" in folder:
            n, options = counts.counterfactual_snli, ["yes", "maybe", "no"]
        else:
            n, options = counts.counterfactual_other, ["yes", "no"]
        _jsonl(target, (_demo_item(i, options, 16) for i in range(n)))
    elif path.startswith("privacy/"):
        people = [(f"person{i}@example.com", f"Person {i}") for i in range(counts.enron_people)]
        if name == "email2name.json":
            target.write_text(json.dumps(dict(people)))
        elif name == "context.json":
            target.write_text(json.dumps({e: f"Some words before the address of {n}, at" for e, n in people}))
        else:
            k = 5 if name.startswith("five") else 1
            shots = {e: [list(people[(i + j + 1) % len(people)]) for j in range(k)] for i, (e, _) in enumerate(people)}
            target.write_text(json.dumps(shots))
    elif path.startswith("machine_ethics/"):
        with target.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["label", "input", "is_short", "edited"])
            short = max(counts.ethics_short, 32) if "train" in name else counts.ethics_short
            for i in range(short):
                writer.writerow([i % 2, f"I did thing {i}.", "True", "False"])
            writer.writerow([0, "A long post.", "False", "False"])
    elif path.startswith("fairness/"):
        n = counts.fairness_crime if "crime" in name else counts.fairness_adult
        if name.endswith(".npy"):
            write_npy_1d(target, [i % 2 for i in range(n)])
        else:
            label = ("High", "Low") if "crime" in name else ("yes", "no")
            _jsonl(
                target,
                (
                    {"option": list(label), "input": f"description {i}:", "label": label[i % 2], "examples": []}
                    for i in range(n)
                ),
            )
    else:
        raise ValueError(f"no synthetic form for {path}")


def write_synthetic_decodingtrust(root: Path, counts: RowCounts | None = None) -> list[str]:
    """Write every file the ``decodingtrust`` suite reads under ``root`` (``counts`` items per file, by default a few);
    the relative paths written."""
    counts = counts or RowCounts()

    files = required_files(parse_scenarios(load_suite("decodingtrust")))
    for path in files:
        _write(root, path, counts)
    return files
