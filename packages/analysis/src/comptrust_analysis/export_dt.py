"""``analyze RUN --export decodingtrust DIR``: a run's generations in DecodingTrust's own result-file layout.

Each endpoint becomes one DecodingTrust model, ``comptrust/<endpoint>`` (``comptrust_<endpoint>`` where DecodingTrust
puts the name into a file name), under ``DIR/results/``, laid out and shaped as DecodingTrust's generation code
writes it and its scorers read it (AI-secure/DecodingTrust @161ae83 and the compressed-trust fork @0cf3fc1):

- toxicity: ``toxicity/user_prompts/generations/<model>/<config>-template-<t>-generations.jsonl``, a line per prompt
  in prompt-file order, its n samples as ``response.choices[*].message.content`` (``perspective_api_evaluate.py``);
- stereotype: ``stereotype/generations/<model>/<type>/<n>_<topic>.jsonl``, a line per statement with its exact
  ``user_prompt`` and ``gen_0..gen_<n-1>`` (``agreement_func.calculate_agreeability``);
- AdvGLUE++: ``adv-glue-plus-plus/<model>/<source>-demo.json`` (``{task: {requests, responses, predictions,
  labels}}``, the integer predictions gpt_eval.py stores) and the ``glue-benign-demo.json`` marker ``adv_stats.py``
  finds models by;
- OOD: ``ood/results/<model>/<config>.json``, ``{task: {"outputs": [[messages, response], ...]}}`` aligned with the
  data lists (``evaluation_ood.py``);
- adversarial demonstrations: ``adv_demonstration/<data path>/<model_>_<seed>.jsonl`` (``{requests, responses,
  labels}``, data-file order; ``aggregate_score.py``);
- privacy: ``privacy/generations/{enron,pii,pii_jailbreak,understanding}/<file>.jsonl`` with the names, ground truth
  (``gt-email``, ``gt``, ``word``) and ``continuation`` ``result_agg.py`` reads; an empty ``context-50`` Enron file
  is written where the run has none, because ``result_agg.py`` finds its models by that file alone (no lines: it
  counts for nothing);
- machine ethics: ``machine_ethics/generations/<dataset>/<model>/few_shot_<k>_test_num<n>_jailbreak_<j>_evasive_<e>
  .json`` (``[[messages, response], ...]``) and its ``label_`` twin (``calculate_score.py``);
- fairness: ``fairness/results/<model>/<setting>.json``, one line ``{requests, responses, labels}`` in prompt-file
  order (``score_calculation_script.py``).

What a reference scorer needs beyond that (the data folder, complete result files: see the README) is the user's.
Requests that got no answer are not written; a file missing some of its items is written with what there is.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from comptrust_core import ConfigError, atomic_write_text

from comptrust_analysis.load import LoadedRun

__all__ = ["ExportResult", "dt_model_name", "export_decodingtrust"]

log = logging.getLogger(__name__)

_COLUMNS = [
    "endpoint",
    "perspective",
    "sub_scenario",
    "item_id",
    "sample_index",
    "request",
    "text",
    "label",
    "attributes",
]
_TOXICITY_CONFIGS = (("gpt3", "toxic-gpt3.5"), ("gpt4", "toxic-gpt4"), ("nontoxic", "nontoxic"), ("toxic", "toxic"))
_TEMPLATES = {"benign": 0, "adv": 1}
_FAIRNESS_PREFIXES = ("adult-", "crime-")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: tuple[Path, ...]
    models: tuple[str, ...]
    skipped: dict[str, int]
    """Records left out, by reason (a request with no answer; a perspective with no DecodingTrust scorer)."""


@dataclass(frozen=True)
class _Answer:
    perspective: str
    sub_scenario: str
    item_id: str
    sample: int
    messages: list[dict[str, str]] | None
    prompt: str | None
    text: str
    label: str | None
    attrs: dict[str, str]

    @property
    def index(self) -> int:
        """The item's position in its data file (the last part of its id)."""
        return int(self.item_id.rsplit("/", 1)[1])

    def request(self) -> Any:
        return self.messages if self.messages is not None else self.prompt


def dt_model_name(endpoint: str) -> str:
    return f"comptrust/{endpoint}"


def _response(texts: Iterable[str]) -> dict[str, Any]:
    """The chat-completion shape DecodingTrust's ``chat.py`` stores for every backend."""
    choices = [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for i, t in enumerate(texts)
    ]
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "id": "comptrust",
        "object": "chat.completion",
        "created": 0,
        "model": "",
        "choices": choices,
        "usage": usage,
    }


def _answers(runs: list[LoadedRun]) -> tuple[dict[str, list[_Answer]], dict[str, int]]:
    """Ok answers per endpoint; the count of records left out, by reason."""
    lazy = pl.concat([r.records.select(*_COLUMNS, "status") for r in runs])
    frame = lazy.collect()
    skipped: dict[str, int] = defaultdict(int)
    out: dict[str, list[_Answer]] = defaultdict(list)
    for row in frame.iter_rows(named=True):
        if row["status"] != "ok":
            skipped["no answer (error records)"] += 1
            continue
        request = row["request"] or {}
        out[row["endpoint"]].append(
            _Answer(
                perspective=row["perspective"],
                sub_scenario=row["sub_scenario"] or "",
                item_id=row["item_id"],
                sample=row["sample_index"] or 0,
                messages=request.get("messages"),
                prompt=request.get("prompt"),
                text=row["text"] or "",
                label=row["label"],
                attrs={a["name"]: a["value"] for a in row["attributes"] or []},
            )
        )
    return out, dict(skipped)


def _by(answers: Iterable[_Answer], key: Any) -> dict[Any, list[_Answer]]:
    groups: dict[Any, list[_Answer]] = defaultdict(list)
    for answer in answers:
        groups[key(answer)].append(answer)
    return groups


def _items(answers: list[_Answer]) -> list[list[_Answer]]:
    """Samples grouped per item, items in data-file order, samples in sample order."""
    per_item = _by(answers, lambda a: a.item_id)
    return [sorted(s, key=lambda a: a.sample) for _, s in sorted(per_item.items(), key=lambda kv: kv[1][0].index)]


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[Path] = []

    def json(self, relative: str, content: Any, *, lines: bool = False, indent: int | None = None) -> None:
        if lines:
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in content)
        else:
            text = json.dumps(content, ensure_ascii=False, indent=indent) + ("\n" if indent else "")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        self.files.append(path)


def _toxicity(w: _Writer, model: str, answers: list[_Answer]) -> None:
    for (source, template), group in _by(
        answers, lambda a: (a.attrs.get("source", ""), a.attrs.get("template"))
    ).items():
        config = next((c for marker, c in _TOXICITY_CONFIGS if marker in source), None)
        if config is None or template not in _TEMPLATES:
            log.warning(
                "toxicity: no DecodingTrust config for prompts file %r, template %r; not exported", source, template
            )
            continue
        rows = []
        for samples in _items(group):
            user = (samples[0].messages or [{}])[-1].get("content", "")
            rows.append(
                {
                    "continuation": samples[0].text,
                    "prompt": user.split(" \n\n", 1)[-1],  # after the task description (the scorer only copies it)
                    "response": _response(a.text for a in samples),
                    "message": samples[0].messages,
                }
            )
        w.json(
            f"toxicity/user_prompts/generations/{model}/{config}-template-{_TEMPLATES[template]}-generations.jsonl",
            rows,
            lines=True,
        )


def _stereotype(w: _Writer, model: str, answers: list[_Answer]) -> None:
    groups = _by(answers, lambda a: (a.sub_scenario, a.attrs.get("stereotype_topic", "")))
    for (sys_type, topic), group in groups.items():
        items = _items(group)
        n = max(len(s) for s in items)
        rows = []
        for samples in items:
            messages = samples[0].messages or []
            system = next((m["content"] for m in messages if m["role"] == "system"), "")
            user = messages[-1]["content"] if messages else ""
            row: dict[str, Any] = {
                "model": model.split("/")[1],
                "system_prompt": system,
                "user_prompt": user.split("\n", 1)[-1],
            }
            for a in samples:
                row[f"gen_{a.sample}"] = {"agreeability_num": 0, "output": a.text}
            rows.append(row)
        w.json(f"stereotype/generations/{model}/{sys_type}/{n}_{topic}.jsonl", rows, lines=True)


def _advglue(w: _Writer, model: str, answers: list[_Answer]) -> None:
    for source, group in _by(answers, lambda a: a.attrs.get("source", "")).items():
        content: dict[str, dict[str, list[Any]]] = {}
        for task, task_answers in _by(group, lambda a: a.attrs.get("glue_task", "")).items():
            items = [s[0] for s in _items(task_answers)]
            if any("dt_prediction" not in a.attrs for a in items):
                raise ConfigError(
                    f"AdvGLUE++ records of {model} carry no integer prediction (made by an older comptrust): "
                    "rerun evaluate on them (--retry-errors does not redo them; a fresh --out does)"
                )
            content[task] = {
                "requests": [{"model": model, "messages": a.request(), "temperature": 0} for a in items],
                "responses": [_response([a.text]) for a in items],
                "predictions": [int(a.attrs["dt_prediction"]) for a in items],
                "labels": [int(a.attrs["dt_label"]) for a in items],
            }
        w.json(f"adv-glue-plus-plus/{model}/{source}-demo.json", content, indent=4)
    w.json(f"adv-glue-plus-plus/{model}/glue-benign-demo.json", {}, indent=4)


def _ood_config(a: _Answer) -> tuple[str, str]:
    """(result file, task key) of an OOD answer, as evaluation_ood.py names them."""
    subset, demo, kind = a.attrs.get("subset", ""), a.attrs.get("demo"), a.attrs.get("ood_kind")
    if kind == "style":
        return ("style_8shot", f"{subset}_{demo}") if demo else ("style", subset)
    if demo:
        return "knowledge_2020_5shot", f"{subset}_{demo}"
    return ("knowledge_idk" if a.sub_scenario.endswith("_idk") else "knowledge_standard"), subset


def _ood(w: _Writer, model: str, answers: list[_Answer]) -> None:
    files: dict[str, dict[str, Any]] = defaultdict(dict)
    for (config, task), group in _by(answers, _ood_config).items():
        items = [s[0] for s in _items(group)]
        files[config][task] = {"outputs": [[a.request(), _response([a.text])] for a in items]}
    for config, content in files.items():
        w.json(f"ood/results/{model}/{config}.json", content, indent=4)


def _adv_demonstration_dir(a: _Answer) -> str:
    """Where DecodingTrust keeps a set's caches: beside its data path; zero-shot runs in ``<path>_zero`` (as
    test_cf_hydra.py does; test_sc_hydra.py would put a spurious set's zero-shot run into the very file of its seed-0
    few-shot run, whichever came first winning: kept apart here, the scored file stays the scored run)."""
    path = a.attrs.get("data_path", "")
    return f"{path}_zero" if a.attrs.get("demonstrations") == "0" else path


def _adv_demonstration(w: _Writer, model: str, answers: list[_Answer]) -> None:
    mangled = model.replace("/", "_")
    for (path, seed), group in _by(answers, lambda a: (_adv_demonstration_dir(a), a.attrs.get("seed"))).items():
        items = [s[0] for s in _items(group)]
        content = {
            "requests": [a.request() for a in items],
            "responses": [_response([a.text]) for a in items],
            "labels": [a.label for a in items],
        }
        w.json(f"{path}/{mangled}_{seed}.jsonl", content)


def _privacy_rows(group: list[_Answer], key: str, value: Any) -> list[dict[str, Any]]:
    return [
        {
            key: value(a),
            "continuation": a.text,
            "isbanned": False,
            "prompt": a.request(),
            "response": _response([a.text]),
        }
        for samples in _items(group)
        for a in samples
    ]


def _privacy(w: _Writer, model: str, answers: list[_Answer]) -> None:
    mangled = model.replace("/", "_").replace(" ", "")
    base = "privacy/generations"
    context50 = False
    for scenario, group in _by(answers, lambda a: a.attrs.get("privacy_scenario")).items():
        if scenario == "enron":
            for prompt_type, files in _by(group, lambda a: a.attrs.get("prompt_type", "")).items():
                size = 3333 if prompt_type.startswith("context") else 3294
                context50 |= prompt_type == "context-50"
                rows = _privacy_rows(files, "gt-email", lambda a: a.label)
                w.json(f"{base}/enron/{prompt_type}_s{size}_{mangled}_1.jsonl", rows, lines=True)
        elif scenario == "pii":
            for (pii, shots, kind, jb), files in _by(
                group,
                lambda a: (
                    a.attrs.get("pii", ""),
                    a.attrs.get("shots"),
                    a.attrs.get("fewshot_type"),
                    a.attrs.get("jailbreak"),
                ),
            ).items():
                name = f"{pii}_{shots}shot{kind}_s100_{mangled}_1" + (f"_jb{jb}" if jb is not None else "")
                folder = "pii" if jb is None else "pii_jailbreak"
                rows = _privacy_rows(files, "gt", lambda a: a.label)
                w.json(f"{base}/{folder}/{name.replace(' ', '')}.jsonl", rows, lines=True)
        elif scenario == "understanding":
            for (topic, question), files in _by(
                group, lambda a: (a.attrs.get("topic"), a.attrs.get("question"))
            ).items():
                rows = _privacy_rows(files, "word", lambda a: a.attrs.get("phrasing"))
                w.json(f"{base}/understanding/{topic}_t0_s100_{mangled}_ques{question}_1.jsonl", rows, lines=True)
    if not context50:  # result_agg.py finds models by this file alone; empty, it counts for nothing
        w.json(f"{base}/enron/context-50_s3333_{mangled}_1.jsonl", [], lines=True)


def _machine_ethics(w: _Writer, model: str, answers: list[_Answer]) -> None:
    def key(a: _Answer) -> tuple[str, ...]:
        at = a.attrs
        return tuple(at.get(k, "0") for k in ("dataset", "few_shot_num", "test_num", "jailbreak", "evasive"))

    for (dataset, shots, test_num, jailbreak, evasive), group in _by(answers, key).items():
        if dataset == "0":
            raise ConfigError(
                f"machine ethics records of {model} do not name their settings (made by an older comptrust): "
                "rerun evaluate on them into a fresh --out"
            )
        items = [s[0] for s in _items(group)]
        stem = f"few_shot_{shots}_test_num{test_num}_jailbreak_{jailbreak}_evasive_{evasive}.json"
        folder = f"machine_ethics/generations/{dataset}/{model}"
        w.json(f"{folder}/{stem}", [[a.request(), _response([a.text])] for a in items])
        w.json(f"{folder}/label_{stem}", [a.label for a in items])


def _fairness_setting(a: _Answer) -> str:
    setting = a.sub_scenario
    for prefix in _FAIRNESS_PREFIXES:  # the quick suite's names: "adult-zero_shot_br_0.5", "crime-crime_br_0.5"
        setting = setting.removeprefix(prefix)
    return setting


def _fairness(w: _Writer, model: str, answers: list[_Answer]) -> None:
    for setting, group in _by(answers, _fairness_setting).items():
        items = [s[0] for s in _items(group)]
        content = {
            "requests": [a.request() for a in items],
            "responses": [_response([a.text]) for a in items],
            "labels": [a.label for a in items],
        }
        w.json(f"fairness/results/{model}/{setting}.json", content)  # one line: the scorer json.loads each line


_EXPORTERS = {
    "toxicity": _toxicity,
    "stereotype": _stereotype,
    "advglue": _advglue,
    "ood": _ood,
    "adv_demonstration": _adv_demonstration,
    "privacy": _privacy,
    "machine_ethics": _machine_ethics,
    "fairness": _fairness,
}
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def _models(answers: dict[str, list[_Answer]]) -> Iterator[tuple[str, list[_Answer]]]:
    for endpoint, rows in sorted(answers.items()):
        if not _SAFE.match(endpoint):
            raise ConfigError(
                f"endpoint name {endpoint!r} cannot be a DecodingTrust model folder; rename it (letters, digits, . _ -)"
            )
        yield dt_model_name(endpoint), rows


def export_decodingtrust(runs: list[LoadedRun], out: Path) -> ExportResult:
    """Write the runs' generations under ``out/results`` in DecodingTrust's layout (see the module docstring)."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--export decodingtrust: {out} is not an empty folder; name a new one")
    answers, skipped = _answers(runs)
    writer = _Writer(out / "results")
    models = []
    for model, rows in _models(answers):
        models.append(model)
        for perspective, group in _by(rows, lambda a: a.perspective).items():
            exporter = _EXPORTERS.get(perspective)
            if exporter is None:
                skipped[f"{perspective}: no DecodingTrust scorer"] = skipped.get(
                    f"{perspective}: no DecodingTrust scorer", 0
                ) + len(group)
                continue
            exporter(writer, model, group)
    if not models:
        raise ConfigError("--export decodingtrust: the runs hold no answered requests to export")
    return ExportResult(out=out, files=tuple(writer.files), models=tuple(models), skipped=skipped)
