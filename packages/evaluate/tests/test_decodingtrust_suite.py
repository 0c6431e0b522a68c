"""The decodingtrust suite: the reference's default configurations, enumerated end to end over a synthetic data/
folder in DecodingTrust's formats (our own placeholder items)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_evaluate import build_plan, load_suite
from comptrust_evaluate.plan import Plan, parse_scenarios
from comptrust_evaluate.synthetic_data import RowCounts, WordTokenizer, write_synthetic_decodingtrust
from comptrust_evaluate.tasks import _enron_context
from comptrust_evaluate.tasks._enron_context import context_prompt, gpt2_tokenizer


@pytest.fixture(autouse=True)
def word_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPT-2's tokenizer is a download: the context-* prompts get a stand-in here."""
    monkeypatch.setattr(_enron_context, "gpt2_tokenizer", WordTokenizer)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dt") / "data"
    write_synthetic_decodingtrust(root, RowCounts())  # 2 items per file, 6 Enron people
    return root


def test_scenarios_are_the_reference_configs() -> None:
    scenarios = parse_scenarios(load_suite("decodingtrust"))
    assert Counter(t.name for t, _ in scenarios) == {
        "toxicity": 8,  # 4 prompt files x {benign, adversarial}
        "stereotype": 3,  # benign, untargeted, targeted
        "advglue": 3,  # alpaca, vicuna, stable-vicuna (sst2, qqp, mnli each)
        "ood": 57,  # style 11 + style 8-shot 27 + knowledge 2 + idk 2 + 2020 5-shot 15
        "adv_demonstration": 54,  # counterfactual 12 + spurious 12 + zero-shot 6 + backdoor 24
        "privacy": 36,  # Enron 27 (context-50/100/200, 24 templates) + PII 3 + PII jailbreak 3 + understanding 3
        "machine_ethics": 12,  # zero-shot, 32-shot, jailbreak 1-5, evasive 1-5
        "fairness": 12,  # adult zero-shot 3, few-shot 3, fair demonstrations 3, crime 3
    }


def _per_item(plan: Plan) -> dict[str, set[tuple[object, ...]]]:
    seen: dict[str, set[tuple[object, ...]]] = {}
    for task, item in plan.iter_items():
        p = item.request.params
        system = bool(item.request.messages and item.request.messages[0].role == "system")
        seen.setdefault(f"{task.name}:{item.attributes[0].value if task.name == 'privacy' else ''}", set()).add(
            (item.n, p.temperature, p.max_new_tokens, system)
        )
    return seen


def test_full_suite_enumerates_with_reference_sizes_and_decoding(data: Path) -> None:
    plan = build_plan(load_suite("decodingtrust", data_dir=data))
    # 2 items per file: toxicity 8x2x25, stereotype 3x2x25, AdvGLUE++ 3x3x2, OOD 57x2, adv. demonstrations
    # (12x3 + 12x5 + 6x1 + 24x3 files) x 2, Enron 27x6, PII 3x23x6 cases, PII jailbreak 3x12x10x6 cases,
    # understanding 3x8x17x100, ethics 2+2+5+5 (jailbreak/evasive test the "wrong" items only), fairness 12x2
    assert plan.total == 400 + 150 + 18 + 114 + 348 + 162 + 414 + 2160 + 40_800 + 14 + 24
    decoding = _per_item(plan)
    assert decoding["toxicity:"] == {(25, 1.0, 150, True)}
    assert decoding["stereotype:"] == {(25, 1.0, 150, True)}
    assert decoding["advglue:"] == {(1, 0.0, 16, False)}  # no system message: sys false
    for task in ("ood", "adv_demonstration", "machine_ethics", "fairness"):
        assert {d[:3] for d in decoding[f"{task}:"]} == {(1, 0.0, 20)}, task  # t=0 means greedy
    assert decoding["privacy:enron"] == {(1, 1.0, 16, False)}  # template 0: no system message
    assert decoding["privacy:pii"] == {(1, 1.0, 32, True)}
    assert decoding["privacy:understanding"] == {(100, 1.0, 64, False)}


def test_spurious_zero_shot_drops_the_demonstrations(data: Path) -> None:
    plan = build_plan(load_suite("decodingtrust", data_dir=data), tasks=("adv_demonstration",), limit=1)
    shots = {item.item_id.split("/")[0]: len(item.request.messages or ()) for _, item in plan.iter_items()}
    assert shots["spurious-PP-zero"] == 2  # system + task and input
    assert shots["spurious-PP-entail-bias"] == 3 + 2 * 16 + 1


def test_full_suite_in_dt_compat_mode_is_all_raw_prompts(data: Path) -> None:
    plan = build_plan(load_suite("decodingtrust", data_dir=data), dt_compat=True, limit=1)
    items = [item for _, item in plan.iter_items()]
    assert len(items) == 185  # --limit 1: one item per scenario
    assert all(i.request.messages is None and (i.request.prompt or "").endswith("[/INST]") for i in items)
    enron = next(i for i in items if i.item_id.startswith("enron-"))
    assert (enron.request.prompt or "").startswith("<s>[INST] <<SYS>>\nYou are a helpful, respectful")


def test_enron_context_prompt_is_the_last_k_tokens_of_the_last_1024_characters() -> None:
    context = "x" * 2000 + " " + " ".join(f"w{i}" for i in range(300))
    tail = context[-1024:].split()
    assert context_prompt(context, 50) == " ".join(tail[-50:])
    assert context_prompt("only three words", 50) == "only three words"


def test_gpt2_tokenizer_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @staticmethod
        def from_pretrained(name: str) -> None:
            raise OSError(f"{name}: not in the cache and no network")

    monkeypatch.setitem(sys.modules, "transformers", type(sys)("transformers"))
    monkeypatch.setattr(sys.modules["transformers"], "GPT2Tokenizer", Broken, raising=False)
    gpt2_tokenizer.cache_clear()
    with pytest.raises(ConfigError, match=r"could not load GPT-2's tokenizer .*no network.*context-50/100/200"):
        gpt2_tokenizer()
    gpt2_tokenizer.cache_clear()


def test_an_empty_gpt2_tokenizer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Empty:  # what transformers 5 hands back offline without the files: no vocabulary, no error
        @staticmethod
        def from_pretrained(name: str) -> Empty:
            return Empty()

        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": []}

        def decode(self, ids: list[int]) -> str:
            return ""

    monkeypatch.setitem(sys.modules, "transformers", type(sys)("transformers"))
    monkeypatch.setattr(sys.modules["transformers"], "GPT2Tokenizer", Empty, raising=False)
    gpt2_tokenizer.cache_clear()
    with pytest.raises(ConfigError, match="loaded empty"):
        gpt2_tokenizer()
    gpt2_tokenizer.cache_clear()
