"""MMLU and the Beyond-Perplexity tasks end to end through the embedded server (a tiny random model, and SmolLM2),
over both of its protocols: perplexity from the server's prompt logprobs equals perplexity computed directly with
transformers on the same text, and analyze turns the records into the MMLU and Beyond-Perplexity tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from comptrust_analysis import AnalysisConfig, analyze
from comptrust_evaluate import EvaluateConfig
from comptrust_evaluate.api import evaluate
from comptrust_evaluate.config import EndpointSpec
from comptrust_serve import launch
from comptrust_serve.testing import build_tiny_checkpoint

QUICK = Path(__file__).parents[1] / "packages/evaluate/src/comptrust_evaluate/data/quick"

SUITE = """
data = "{data}"

[[scenario]]
task = "mmlu"
name = "mmlu"
max_prompt_chars = {mmlu_chars}
max_new_tokens = 4

[[scenario]]
task = "perplexity"
name = "lm"
files = ["beyond/lm_sample.txt", "beyond/lm_docs.jsonl"]
max_chars = {chunk}

[[scenario]]
task = "bbq"
name = "bbq"
categories = ["Age"]

[[scenario]]
task = "dialect_gap"
name = "sae-vs-aae"
a = "beyond/dialect_sae.txt"
b = "beyond/dialect_aae.txt"
"""


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "records" / "smol.ndjson").read_text().splitlines()]


def _direct(model: Any, tokenizer: Any, text: str) -> tuple[float, int]:
    """Sum of the logprobs of every token but the first, and their count, by one forward pass of transformers."""
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None]).squeeze(1)
    return float(logprobs.double().sum()), int(ids.shape[1] - 1)


def _run_both(folder: Path, suite: Path, out: Path) -> dict[str, Path]:
    """Serve ``folder`` with the embedded server; run ``suite`` over its TGI and its OpenAI routes."""
    runs = {}
    with launch(folder, name="smol", dtype="float32", max_batch=8) as server:
        for protocol in ("tgi", "openai"):
            runs[protocol] = out / protocol
            spec = EndpointSpec(url=server.endpoint.url, name="smol", protocol=protocol)
            config = EvaluateConfig(out=runs[protocol], endpoints=(spec,), suite=str(suite), progress="off")
            assert evaluate(config).errors == 0
    return runs


def _check_against_transformers(folder: Path, runs: dict[str, Path]) -> int:
    """Every prompt-logprob record of both runs against a direct computation; returns how many texts matched."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tgi, openai = (_records(runs[p]) for p in ("tgi", "openai"))
    assert len(tgi) == len(openai)
    by_key = {(r["task"], r["item_id"]): r for r in openai}
    checked = 0
    for record in tgi:
        twin = by_key[record["task"], record["item_id"]]
        if record["task"] == "mmlu":
            assert record["prediction"] == twin["prediction"]  # the same greedy answer through both routes
            continue
        scores = {s["name"]: s["value"] for s in record["scores"]}
        other = {s["name"]: s["value"] for s in twin["scores"]}
        total, n = _direct(model, tokenizer, record["request"]["prompt"])
        assert scores["tokens"] == other["tokens"] == n
        assert scores["perplexity"] == pytest.approx(math.exp(-total / n), rel=1e-3)
        assert other["perplexity"] == pytest.approx(math.exp(-total / n), rel=1e-3)
        checked += 1
    return checked


@pytest.mark.timeout(120)
def test_beyond_perplexity_through_the_embedded_server_with_a_tiny_model(tmp_path: Path) -> None:
    folder = build_tiny_checkpoint(tmp_path / "tiny")
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(data=QUICK.as_posix(), mmlu_chars=300, chunk=120))
    runs = _run_both(folder, suite, tmp_path)
    checked = _check_against_transformers(folder, runs)
    assert checked == len(_records(runs["tgi"])) - 4  # every record but MMLU's four

    for protocol, run in runs.items():
        result = analyze(AnalysisConfig(run_dirs=(run,), plots=False))
        assert set(result.beyond) == {"mmlu", "perplexity", "dialect_gap", "bbq"}, protocol
        assert result.beyond["mmlu"]["n"].to_list() == [2, 2, 4]
        files = {r["file"]: r for r in result.beyond["perplexity"].iter_rows(named=True)}
        assert set(files) == {"lm_sample.txt", "lm_docs.jsonl"} and files["lm_sample.txt"]["chunks"] > 1
        bbq = {r["category"]: r for r in result.beyond["bbq"].iter_rows(named=True)}
        assert (bbq["Age"]["n_amb"], bbq["Age"]["n_dis"]) == (2, 2)
        assert all(-1.0 <= (bbq["all"][k] or 0.0) <= 1.0 for k in ("s_amb", "s_dis"))
        (gap,) = result.beyond["dialect_gap"].iter_rows(named=True)
        assert gap["pairs"] == 3 and gap["ratio"] == pytest.approx(gap["ppl_b"] / gap["ppl_a"])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_perplexity_from_smollm2_prompt_logprobs_equals_transformers(tmp_path: Path, smollm2: Path) -> None:
    folder = smollm2
    suite = tmp_path / "suite.toml"
    lm_only = SUITE.split("[[scenario]]")
    suite.write_text(lm_only[0] + "[[scenario]]" + lm_only[2])  # the perplexity scenario alone
    suite.write_text(suite.read_text().format(data=QUICK.as_posix(), chunk=400))
    runs = _run_both(folder, suite, tmp_path)
    assert _check_against_transformers(folder, runs) == 4
