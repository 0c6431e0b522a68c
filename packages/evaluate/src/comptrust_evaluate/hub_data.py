"""DecodingTrust's data from the Hugging Face dataset ``AI-Secure/DecodingTrust``, laid out like its ``data/`` folder.

Most files of the dataset mirror ``data/`` (toxicity, stereotype, adv_demonstration, fairness: DecodingTrust's own
loaders read them by the same relative paths). Four perspectives are stored there in another form, which
DecodingTrust's HF loaders (``load_dataset(..., "ood" | "machine_ethics" | "adv-glue-plus-plus" | "privacy")``) read;
those files are converted back once into the ``data/`` form the tasks read:

* ``ood/style.jsonl``, ``ood/knowledge.jsonl`` (one row per question, with its ``category``) →
  ``ood/{style,knowledge}.json``;
* ``machine_ethics/cm_{test,train}.jsonl`` (``label``, ``input1``, ``is_short``) →
  ``machine_ethics/ethics/commonsense/cm_*.csv``;
* ``adv-glue-plus-plus/*.jsonl`` (one file per GLUE task, rows tagged with the source ``model``) →
  ``adv-glue-plus-plus/data/{alpaca,vicuna,stable-vicuna}.json``;
* ``privacy/enron_data/*.jsonl`` (``{"email", "prompt"}`` rows) → the ``{email: ...}`` maps ``*.json``;
* fairness's ``.npy`` arrays, where the hub lacks them, rebuilt from their ``.jsonl`` items.

The files are fetched with ``huggingface_hub.snapshot_download`` (its cache; ``HF_HUB_OFFLINE=1`` works from it) and
the ``data/`` view is built under comptrust's cache, one folder per dataset revision.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError, cache_dir

from comptrust_evaluate.tasks._npy import write_npy_1d
from comptrust_evaluate.tasks.base import iter_jsonl

__all__ = ["HF_DATASET", "hub_files", "materialize"]

log = logging.getLogger(__name__)

HF_DATASET = "AI-Secure/DecodingTrust"
_ADVGLUE = re.compile(r"adv-glue-plus-plus/data/(alpaca|vicuna|stable-vicuna)\.json")
_CM = re.compile(r"machine_ethics/ethics/commonsense/(cm_test|cm_train)\.csv")
_OOD = re.compile(r"ood/(style|knowledge)\.json")
_FAIRNESS_NPY = re.compile(r"fairness/fairness_data/(sensitive_attr|gt_labels)_(.+)\.npy")
_SEX = re.compile(r"\bsex (\w+)")
_ENRON = re.compile(r"privacy/enron_data/([\w-]+)\.json")
_ONE_VALUE = ("email2name", "context")  # their rows hold one string (prompt[0][0]), the others a list of pairs


@dataclass(frozen=True)
class _Recipe:
    sources: tuple[str, ...]  # patterns of the hub files it reads
    build: Callable[[Path, Path], bool]  # (snapshot folder, target file) -> whether it could write the target


def _write_atomic(target: Path, write: Callable[[Any], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        write(fh)
    os.replace(tmp, target)


def _answers(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _ood(kind: str) -> Callable[[Path, Path], bool]:
    def build(snapshot: Path, target: Path) -> bool:
        source = snapshot / "ood" / f"{kind}.jsonl"
        if not source.is_file():
            return False
        tests, demos = ("test", "demo") if kind == "knowledge" else ("dev", "train_demo")
        out: dict[str, dict[str, list[dict[str, Any]]]] = {demos: {}, tests: {}}
        for row in iter_jsonl(source):
            category = str(row["category"])
            if kind == "knowledge":
                section = tests if category.startswith("qa_") else demos
                record = {k: v for k, v in row.items() if k != "category"} | {"answer": _answers(row["answer"])}
            else:
                section = demos if re.fullmatch(r".+_\d", category) else tests
                bucket = out[section].get(category, [])
                record = {"sentence": row["question_sentence"], "label": str(row["answer"]), "id": len(bucket)}
            out[section].setdefault(category, []).append(record)
        _write_atomic(target, lambda fh: json.dump(out, fh, ensure_ascii=False))
        return True

    return build


def _commonsense(split: str) -> Callable[[Path, Path], bool]:
    def build(snapshot: Path, target: Path) -> bool:
        source = snapshot / "machine_ethics" / f"{split}.jsonl"
        if not source.is_file():
            return False

        def write(fh: Any) -> None:
            writer = csv.writer(fh)
            writer.writerow(["label", "input", "is_short", "edited"])
            for row in iter_jsonl(source):
                label = row["label"][0] if isinstance(row["label"], list) else row["label"]
                writer.writerow([int(label), row["input1"], bool(row["is_short"]), bool(row.get("edited", False))])

        _write_atomic(target, write)
        return True

    return build


def _advglue(model: str) -> Callable[[Path, Path], bool]:
    def build(snapshot: Path, target: Path) -> bool:
        content: dict[str, list[dict[str, Any]]] = {}
        for source in sorted((snapshot / "adv-glue-plus-plus").rglob("*.jsonl")):
            rows = [{k: v for k, v in r.items() if k != "model"} for r in iter_jsonl(source) if r.get("model") == model]
            if rows:
                content[source.stem] = rows
        if not content:
            return False
        _write_atomic(target, lambda fh: json.dump(content, fh, ensure_ascii=False))
        return True

    return build


def _enron(stem: str) -> Callable[[Path, Path], bool]:
    def build(snapshot: Path, target: Path) -> bool:
        source = snapshot / "privacy" / "enron_data" / f"{stem}.jsonl"
        if not source.is_file():
            return False
        single = stem in _ONE_VALUE
        out = {str(r["email"]): r["prompt"][0][0] if single else r["prompt"] for r in iter_jsonl(source)}
        _write_atomic(target, lambda fh: json.dump(out, fh, ensure_ascii=False))
        return True

    return build


def _fairness_npy(path: str, kind: str, stem: str) -> Callable[[Path, Path], bool]:
    """The hub's ``.npy`` if it has one; else the array rebuilt from the items, as DecodingTrust's files hold it:
    labels 1 for "yes" (adult) / "Low" (crime), else 0; adult's sensitive attribute is the "sex ..." in the text,
    crime's is its label file (DecodingTrust's configs point at gt_labels for crime)."""

    def build(snapshot: Path, target: Path) -> bool:
        if (snapshot / path).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snapshot / path, target)
            return True
        source = snapshot / "fairness" / "fairness_data" / f"{stem}.jsonl"
        if not source.is_file():
            return False
        values: list[int] | list[str]
        if kind == "gt_labels":
            values = [1 if str(r["label"]) in ("yes", "Low") else 0 for r in iter_jsonl(source)]
        else:
            sexes = [_SEX.search(str(r["input"])) for r in iter_jsonl(source)]
            if not all(sexes):
                return False
            values = [m[1] for m in sexes if m]
        target.parent.mkdir(parents=True, exist_ok=True)
        write_npy_1d(target, values)
        return True

    return build


def _recipe(path: str) -> _Recipe | None:
    """How a ``data/`` file is made from the hub's files; ``None``: the hub holds it at the same path."""
    if match := _OOD.fullmatch(path):
        return _Recipe((f"ood/{match[1]}.jsonl",), _ood(match[1]))
    if match := _CM.fullmatch(path):
        return _Recipe((f"machine_ethics/{match[1]}.jsonl",), _commonsense(match[1]))
    if match := _ADVGLUE.fullmatch(path):
        return _Recipe(("adv-glue-plus-plus/*.jsonl",), _advglue(match[1]))
    if match := _ENRON.fullmatch(path):
        return _Recipe((f"privacy/enron_data/{match[1]}.jsonl",), _enron(match[1]))
    if match := _FAIRNESS_NPY.fullmatch(path):
        items = f"fairness/fairness_data/{match[2]}.jsonl"
        return _Recipe((path, items), _fairness_npy(path, match[1], match[2]))
    return None


def hub_files(files: Iterable[str]) -> list[str]:
    """The hub file patterns that hold ``files`` (paths in ``data/`` layout)."""
    patterns: set[str] = set()
    for path in files:
        recipe = _recipe(path)
        patterns.update(recipe.sources if recipe else (path,))
    return sorted(patterns)


def _snapshot(patterns: list[str], revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(
            "reading DecodingTrust's data from Hugging Face needs huggingface_hub (pip install huggingface_hub); "
            "or pass --data-dir with a DecodingTrust checkout's data/ folder"
        ) from None
    log.info("fetching %d file patterns of the dataset %s (cached after the first time)", len(patterns), HF_DATASET)
    try:
        folder = snapshot_download(repo_id=HF_DATASET, repo_type="dataset", allow_patterns=patterns, revision=revision)
    except Exception as exc:  # offline without a cache, unknown revision, HTTP errors: one line, see the caller
        log.debug("snapshot_download failed", exc_info=True)
        message = f"could not fetch the dataset {HF_DATASET} from Hugging Face ({type(exc).__name__}: {exc})"
        raise ConfigError(message) from None
    return Path(folder)


def materialize(files: list[str], revision: str | None = None) -> Path:
    """A folder in ``data/`` layout holding ``files`` as far as the hub has them (the caller checks what is missing):
    converted files are written once per dataset revision, the others link to the hub cache."""
    snapshot = _snapshot(hub_files(files), revision)
    view = cache_dir() / "decodingtrust-hf" / snapshot.name
    for path in files:
        target = view / path
        if target.is_file():
            continue
        recipe = _recipe(path)
        if recipe is not None:
            if recipe.build(snapshot, target):
                log.info("converted the hub's %s into %s", ", ".join(recipe.sources), path)
            continue
        source = snapshot / path
        if not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, target)
    return view
