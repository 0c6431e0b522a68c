"""``analyze --export decodingtrust``: the full DecodingTrust suite's generations in DecodingTrust's own result-file
layout, checked against what its scorers read (file names and patterns, JSON shapes, order), per perspective:
toxicity/perspective_api_evaluate.py, stereotype/agreement_func.py, advglue/adv_stats.py, ood/evaluation_ood.py,
adv_demonstration/aggregate_score.py, privacy/result_agg.py, machine_ethics/calculate_score.py,
fairness/score_calculation_script.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from comptrust_analysis.cli import main as analyze_main
from comptrust_core import ConfigError
from comptrust_evaluate.plan import Unit
from comptrust_evaluate.synthetic_data import RowCounts, WordTokenizer, write_synthetic_decodingtrust
from comptrust_evaluate.tasks import _enron_context

from .harness import TableScorer, run_generations

MODEL = "comptrust/model"
MANGLED = "comptrust_model"


def _answer(unit: Unit) -> str:
    """Answers that parse in every perspective (the layout, not the numbers, is under test here)."""
    return {"advglue": "Positive.", "fairness": "yes", "machine_ethics": "wrong"}.get(unit.task.name, "I agree. no")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "dt-data"
    write_synthetic_decodingtrust(data, RowCounts(toxicity=2, fairness_adult=3, fairness_crime=3))
    with pytest.MonkeyPatch.context() as patch:  # GPT-2's tokenizer is a download: the context-* prompts get a stand-in
        patch.setattr(_enron_context, "gpt2_tokenizer", WordTokenizer)
        scenarios = _decodingtrust_scenarios()
        scores = run_generations(tmp, scenarios, {}, _answer, scorer=TableScorer({}), data=data)
    out = tmp / "dt"
    assert analyze_main([str(scores.run), "--export", "decodingtrust", str(out)]) == 0
    return out / "results"


def _decodingtrust_scenarios() -> str:
    """The packaged decodingtrust suite's [[scenario]] entries (its data folder is replaced by the synthetic one)."""
    text = (
        Path(__file__).resolve().parents[2] / "packages/evaluate/src/comptrust_evaluate/data/suites/decodingtrust.toml"
    ).read_text()
    return text[text.index("[[scenario]]") :]


def _names(folder: Path, pattern: str = "*") -> set[str]:
    return {p.name for p in folder.glob(pattern)}


def test_toxicity_files_are_the_eight_the_scorer_globs(exported: Path) -> None:
    folder = exported / "toxicity/user_prompts/generations" / MODEL
    configs = ("toxic-gpt3.5", "toxic-gpt4", "toxic", "nontoxic")
    assert _names(folder) == {f"{c}-template-{t}-generations.jsonl" for c in configs for t in (0, 1)}
    for path in folder.iterdir():
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines and all(len(line["response"]["choices"]) == 25 for line in lines)  # n equal on every line
        assert all(isinstance(c["message"]["content"], str) for line in lines for c in line["response"]["choices"])
        assert all("prompt" in line for line in lines)


def test_stereotype_lines_carry_the_exact_user_prompt_and_every_generation(exported: Path) -> None:
    root = exported / "stereotype/generations" / MODEL
    assert _names(root) == {"benign", "untargeted", "targeted"}
    data = exported.parents[1] / "dt-data/stereotype/dataset/stereotype_bias_data.jsonl"
    statements = {json.loads(line)["prompt"]["text"] for line in data.read_text().splitlines()}
    for path in root.glob("*/*.jsonl"):
        assert re.fullmatch(r"25_[a-z_]+\.jsonl", path.name)
        for line in map(json.loads, path.read_text().splitlines()):
            # the scorer looks each statement up by its exact text: the data's prompt.text, without the task
            # description the sent message repeats in front of it
            assert line["user_prompt"] in statements
            assert {k for k in line if k.startswith("gen_")} == {f"gen_{i}" for i in range(25)}
            assert {"agreeability_num", "output"} <= set(line["gen_0"])


def test_advglue_files_hold_integer_predictions_and_labels_and_the_benign_marker(exported: Path) -> None:
    folder = exported / "adv-glue-plus-plus" / MODEL
    assert _names(folder) == {
        "alpaca-demo.json",
        "vicuna-demo.json",
        "stable-vicuna-demo.json",
        "glue-benign-demo.json",
    }
    content = json.loads((folder / "alpaca-demo.json").read_text())
    assert set(content) == {"sst2", "qqp", "mnli"}
    for task in content.values():
        assert len(task["labels"]) == len(task["predictions"]) == len(task["responses"]) == len(task["requests"])
        assert all(isinstance(x, int) for x in task["labels"] + task["predictions"])
        assert task["responses"][0]["choices"][0]["message"]["content"] == "Positive."
    assert set(json.loads((folder / "alpaca-demo.json").read_text())["sst2"]["predictions"]) == {1}  # "Positive."


def test_ood_files_are_the_five_configs_with_their_task_keys(exported: Path) -> None:
    folder = exported / "ood/results" / MODEL
    assert _names(folder) == {
        f"{c}.json" for c in ("style", "style_8shot", "knowledge_standard", "knowledge_idk", "knowledge_2020_5shot")
    }
    style = json.loads((folder / "style.json").read_text())
    assert "shake_p0.6" in style and "base" in style
    assert set(json.loads((folder / "knowledge_idk.json").read_text())) == {"qa_2020", "qa_2023"}  # no _idk suffix
    assert "qa_2020_global_facts_0" in json.loads((folder / "knowledge_2020_5shot.json").read_text())
    assert "shake_p0.6_base_0" in json.loads((folder / "style_8shot.json").read_text())
    outputs = style["base"]["outputs"]
    assert outputs[0][0][0]["role"] == "system" and "choices" in outputs[0][1]  # [messages, response] pairs


def test_adv_demonstration_caches_sit_beside_their_data_paths(exported: Path) -> None:
    root = exported / "adv_demonstration"
    cf = root / "counterfactual/snli_premise_cf"
    assert _names(cf) == {f"{MANGLED}_{seed}.jsonl" for seed in (42, 2333, 10007)}
    assert _names(root / "spurious/PP/entail-bias") == {f"{MANGLED}_{s}.jsonl" for s in (0, 42, 2333, 10007, 12306)}
    assert f"{MANGLED}_42.jsonl" in _names(root / "backdoor/experiment1/sst-2_setup1_badword_asr")
    cache = json.loads((cf / f"{MANGLED}_42.jsonl").read_text())
    assert set(cache) == {"requests", "responses", "labels"} and len(cache["requests"]) == len(cache["responses"])


def test_privacy_files_have_the_names_and_keys_result_agg_reads(exported: Path) -> None:
    root = exported / "privacy/generations"
    enron = _names(root / "enron")
    assert f"context-50_s3333_{MANGLED}_1.jsonl" in enron and f"one-shot-a_s3294_{MANGLED}_1.jsonl" in enron
    assert len(enron) == 27
    pii = _names(root / "pii")
    assert f"phonenumber_0shotattack_s100_{MANGLED}_1.jsonl" in pii  # spaces removed from the whole name
    assert f"socialsecuritynumber_3shotprotect_s100_{MANGLED}_1.jsonl" in pii
    assert len(pii) == 23 * 3
    jailbreak = _names(root / "pii_jailbreak")
    assert f"sshprivatekey_3shotattack_s100_{MANGLED}_1_jb9.jsonl" in jailbreak
    assert len(jailbreak) == 12 * 3 * 10
    assert f"divorce_t0_s100_{MANGLED}_ques1_1.jsonl" in _names(root / "understanding")
    line = json.loads((root / "pii" / f"phonenumber_0shotattack_s100_{MANGLED}_1.jsonl").read_text().splitlines()[0])
    assert {"gt", "continuation"} <= set(line) and line["gt"]
    line = json.loads((root / "enron" / f"one-shot-a_s3294_{MANGLED}_1.jsonl").read_text().splitlines()[0])
    assert "@" in line["gt-email"]
    lines = (root / "understanding" / f"divorce_t0_s100_{MANGLED}_ques1_1.jsonl").read_text().splitlines()
    words = [json.loads(line)["word"] for line in lines]  # 17 phrasings x 100 samples, each tagged with its phrase
    assert len(words) == 1700 and len(set(words)) == 17 and "privately told you" in words


def test_machine_ethics_has_the_twelve_files_check_all_scenarios_wants_and_their_labels(exported: Path) -> None:
    folder = exported / "machine_ethics/generations/ethics_commonsense_short" / MODEL
    expected = {"few_shot_0_test_num0_jailbreak_0_evasive_0.json", "few_shot_32_test_num0_jailbreak_0_evasive_0.json"}
    expected |= {f"few_shot_0_test_num200_jailbreak_0_evasive_{e}.json" for e in range(1, 6)}
    expected |= {f"few_shot_0_test_num200_jailbreak_{j}_evasive_0.json" for j in range(1, 6)}
    assert _names(folder) == expected | {f"label_{name}" for name in expected}
    pairs = json.loads((folder / "few_shot_0_test_num0_jailbreak_0_evasive_0.json").read_text())
    labels = json.loads((folder / "label_few_shot_0_test_num0_jailbreak_0_evasive_0.json").read_text())
    assert len(pairs) == len(labels) and set(labels) <= {"wrong", "not wrong"}
    assert pairs[0][1]["choices"][0]["message"]["content"] == "wrong"


def test_fairness_settings_are_single_line_files_in_prompt_order(exported: Path) -> None:
    folder = exported / "fairness/results" / MODEL
    settings = {f"zero_shot_br_{b}" for b in ("0.0", "0.5", "1.0")} | {
        f"few_shot_tr_br_{b}" for b in ("0.0", "0.5", "1.0")
    }
    settings |= {f"few_shot_{k}_fair_demon" for k in (0, 16, 32)} | {f"crime_br_{b}" for b in ("0.0", "0.5", "1.0")}
    assert _names(folder) == {f"{s}.json" for s in settings}
    text = (folder / "crime_br_0.5.json").read_text()
    assert text.count("\n") == 0
    content = json.loads(text)
    assert set(content) == {"requests", "responses", "labels"} and content["labels"][0] in ("High", "Low")


def test_an_export_into_a_folder_with_files_is_refused(exported: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        from comptrust_analysis import load_runs
        from comptrust_analysis.export_dt import export_decodingtrust

        export_decodingtrust(load_runs([exported.parents[1] / "run"]), tmp_path)
