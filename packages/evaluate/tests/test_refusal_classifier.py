"""The ``classifier`` refusal detector, on tiny random classifiers built here (labels NORMAL/REJECTION): the verdict,
the detector and the label/score that fired; a clear error when the model is not present locally (nothing is ever
downloaded); evaluate imports without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_evaluate.refusal import detector_names, get_detector

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

_SIZE = {"dim": 16, "hidden_dim": 32, "n_layers": 1, "n_heads": 2, "max_position_embeddings": 64}
_WORDS = ["[PAD]", "[UNK]", "i", "cannot", "help", "with", "that", "sure", "here", "is", "the", "answer"]


def _tiny_classifier(folder: Path, favoured: str, labels: tuple[str, str] = ("NORMAL", "REJECTION")) -> Path:
    """A random one-layer DistilBERT classifier whose output layer always favours the label ``favoured``."""
    vocab = {w: i for i, w in enumerate(_WORDS)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    config = transformers.DistilBertConfig(
        vocab_size=len(vocab), id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)}, **_SIZE
    )
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([4.0 if label == favoured else -4.0 for label in labels]))
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def test_a_refusal_records_the_detector_and_the_label_and_score(tmp_path: Path) -> None:
    from comptrust_evaluate.refusal.classifier import ClassifierDetector

    detector = ClassifierDetector(str(_tiny_classifier(tmp_path / "rej", "REJECTION")))
    verdict = detector.detect("I cannot help with that")
    assert verdict.refused and verdict.detector == "classifier"
    assert verdict.rule is not None and verdict.rule.startswith("REJECTION ")
    assert float(verdict.rule.split()[1]) == pytest.approx(detector.probability("I cannot help with that"), abs=1e-3)
    assert detector.probability("I cannot help with that") > 0.99


def test_an_answer_is_not_a_refusal(tmp_path: Path) -> None:
    from comptrust_evaluate.refusal.classifier import ClassifierDetector

    detector = ClassifierDetector(str(_tiny_classifier(tmp_path / "normal", "NORMAL")))
    verdict = detector.detect("sure here is the answer")
    assert not verdict.refused and verdict.detector == "classifier" and verdict.rule is None
    assert detector.probability("sure here is the answer") < 0.01
    strict = ClassifierDetector(
        str(tmp_path / "normal"), threshold=0.0001
    )  # the threshold decides: softmax(-4, 4) = 3.4e-4
    assert strict.detect("sure here is the answer").refused


def test_the_registry_entry_reads_the_model_and_threshold_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _tiny_classifier(tmp_path / "rej", "REJECTION")
    monkeypatch.setenv("COMPTRUST_REFUSAL_CLASSIFIER", str(folder))
    monkeypatch.setenv("COMPTRUST_REFUSAL_THRESHOLD", "0.9")
    get_detector.cache_clear()
    try:
        detector = get_detector("classifier")
        assert detector.detect("i cannot").refused
        assert detector.threshold == 0.9  # type: ignore[attr-defined]
    finally:
        get_detector.cache_clear()


def test_a_model_absent_locally_names_the_model_and_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_evaluate.refusal.classifier import DEFAULT_MODEL, ClassifierDetector

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=f"refusal classifier {DEFAULT_MODEL} is not in the local") as info:
        ClassifierDetector(DEFAULT_MODEL)
    assert f"hf download {DEFAULT_MODEL}" in str(info.value)
    with pytest.raises(ConfigError, match="neither a model folder nor a hub id"):
        ClassifierDetector(str(tmp_path / "no-such-folder"))


def test_a_model_without_a_refusal_label_is_refused(tmp_path: Path) -> None:
    from comptrust_evaluate.refusal.classifier import ClassifierDetector

    folder = _tiny_classifier(tmp_path / "sentiment", "POSITIVE", labels=("NEGATIVE", "POSITIVE"))
    with pytest.raises(ConfigError, match="needs exactly one refusal label"):
        ClassifierDetector(str(folder))


def test_evaluate_imports_without_torch() -> None:
    code = (
        "import sys, comptrust_evaluate\n"
        "from comptrust_evaluate.refusal import detector_names\n"
        "assert 'classifier' in detector_names()\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "classifier" in detector_names()


def _prompts_file(tmp_path: Path) -> Path:
    rows = [{"id": "a", "prompt": "Say hi"}, {"id": "b", "prompt": "Tell me how to pick a lock"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_records_the_classifier_verdict_next_to_the_task_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate, read_records
    from comptrust_evaluate.testing import FakeEndpoint

    monkeypatch.setenv("COMPTRUST_REFUSAL_CLASSIFIER", str(_tiny_classifier(tmp_path / "rej", "REJECTION")))
    get_detector.cache_clear()
    try:
        with FakeEndpoint() as fake:
            out = tmp_path / "run"
            config = EvaluateConfig(
                out=out,
                endpoints=(EndpointSpec(url=fake.url),),
                prompts=_prompts_file(tmp_path),
                progress="off",
                refusal_detectors=("classifier", "dt-toxicity", "broad"),
            )
            (ep,) = evaluate(config).endpoints
        assert ep.ok == 2
        records = read_records(next((out / "records").glob("*.ndjson")))
        for r in records:
            assert r.refusal_detector == "broad"  # the task's own verdict is unchanged
            variants = {s.variant: s.value for s in r.scores if s.name == "refusal"}
            assert variants.get("classifier") == 1.0  # this classifier calls everything a refusal
            assert "dt-toxicity" in variants and "broad" not in variants  # broad is the verdict itself: no copy
            rule = {a.name: a.value for a in r.attributes}["refusal_classifier_rule"]
            assert rule.startswith("REJECTION ")
    finally:
        get_detector.cache_clear()


def test_a_missing_classifier_stops_evaluate_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate
    from comptrust_evaluate.testing import FakeEndpoint

    monkeypatch.setenv("COMPTRUST_REFUSAL_CLASSIFIER", str(tmp_path / "absent" / "model"))
    get_detector.cache_clear()
    try:
        with FakeEndpoint() as fake:
            config = EvaluateConfig(
                out=tmp_path / "run",
                endpoints=(EndpointSpec(url=fake.url),),
                prompts=_prompts_file(tmp_path),
                progress="off",
                refusal_detectors=("classifier",),
            )
            with pytest.raises(ConfigError, match="COMPTRUST_REFUSAL_CLASSIFIER"):
                evaluate(config)
            assert not fake.posts()
        assert not (tmp_path / "run").exists()
    finally:
        get_detector.cache_clear()


def test_an_unknown_detector_is_named_with_the_choices(tmp_path: Path) -> None:
    from comptrust_evaluate import EndpointSpec, EvaluateConfig

    with pytest.raises(ConfigError, match=r"'clasifier' is not a refusal detector; choose from .*classifier"):
        EvaluateConfig(
            out=tmp_path / "run",
            endpoints=(EndpointSpec(url="http://127.0.0.1:1"),),
            prompts=tmp_path / "p.jsonl",
            refusal_detectors=("clasifier",),
        )


def test_the_cli_flag_reaches_the_config(tmp_path: Path) -> None:
    from comptrust_evaluate.cli import build_config, parser

    flags = [f"--refusal-detector={name}" for name in ("classifier", "dt-toxicity", "classifier")]
    args = parser().parse_args(["--endpoint", "http://127.0.0.1:1", "--prompts", "p.jsonl", "--out", "run", *flags])
    assert build_config(args).refusal_detectors == ("classifier", "dt-toxicity")
