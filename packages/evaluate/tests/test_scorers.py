"""Toxicity scorers: the registry, offline on clear sentences, Perspective against a loopback fake (rate limit,
429, rejected key), and hf with a tiny random classifier saved in a temporary folder."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from comptrust_core import ConfigError
from comptrust_evaluate.scorers import ScorerError, get_scorer, scorer_names, strip_output
from comptrust_evaluate.scorers.hf import pick_label
from comptrust_evaluate.scorers.perspective import PerspectiveOptions, PerspectiveScorer

KEY = "test-key-not-a-real-one-123"


def test_registry_lists_the_scorers_and_rejects_unknown_names() -> None:
    assert {"hf", "offline", "perspective"} <= set(scorer_names())  # tests may register more
    with pytest.raises(ConfigError, match=r"unknown toxicity scorer .nope."):
        get_scorer("nope")


def test_strip_outputs_drops_unk_and_cuts_at_end_of_turn_markers() -> None:
    assert strip_output("Hello<unk> there</s><s>[INST] more") == "Hello there"
    assert strip_output("a<|im_end|>b<|endoftext|>c") == "a"


def test_offline_scores_clear_sentences() -> None:
    scorer = get_scorer("offline")
    assert scorer.version == "alt-profanity-check 1.9.1"
    kind, insult, empty = asyncio.run(scorer.score(["Have a lovely day, my friend.", "You are a fucking idiot.", " "]))
    assert kind is not None and kind < 0.2
    assert insult is not None and insult > 0.9
    assert empty is None  # DecodingTrust gives an empty continuation no score


def test_offline_rejects_options() -> None:
    with pytest.raises(ScorerError, match="toxicity scorer offline: bad option"):
        get_scorer("offline", {"model": "x"})


def test_perspective_needs_a_key_variable_and_a_set_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ScorerError, match=r"key_env=VAR.*end of 2026"):
        get_scorer("perspective")
    monkeypatch.delenv("CT_TEST_PERSPECTIVE_KEY", raising=False)
    with pytest.raises(ScorerError, match="CT_TEST_PERSPECTIVE_KEY is not set"):
        get_scorer("perspective", {"key_env": "CT_TEST_PERSPECTIVE_KEY"})
    monkeypatch.setenv("CT_TEST_PERSPECTIVE_KEY", KEY)
    assert get_scorer("perspective", {"key_env": "CT_TEST_PERSPECTIVE_KEY"}).name == "perspective"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.granted: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


Handler = Callable[[web.Request, int], Awaitable[web.Response]]


async def _serve(handler: Handler, run: Callable[[str], Awaitable[Any]]) -> tuple[Any, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def analyze(request: web.Request) -> web.Response:
        seen.append({"url": str(request.url), "headers": dict(request.headers), "body": await request.json()})
        return await handler(request, len(seen))

    app = web.Application()
    app.router.add_post("/v1alpha1/comments:analyze", analyze)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        return await run(str(server.make_url("/v1alpha1/comments:analyze"))), seen
    finally:
        await server.close()


def _toxicity(value: float) -> web.Response:
    return web.json_response(
        {"attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}}}
    )


def _scorer(url: str, fake: FakeTime, **options: Any) -> PerspectiveScorer:
    """A scorer on fake time that notes in ``fake.granted`` when each request passed the rate limiter (it is sent
    right after; the loopback server sees them later in real time, when fake time has moved on)."""
    opts = PerspectiveOptions(key_env="UNUSED", url=url, **options)
    scorer = PerspectiveScorer(opts, KEY, clock=fake.clock, sleep=fake.sleep)
    turn = scorer._turn

    async def noted() -> None:
        await turn()
        fake.granted.append(fake.now)

    scorer._turn = noted  # type: ignore[method-assign]
    return scorer


def test_perspective_request_format_and_rate_limit() -> None:
    fake = FakeTime()

    async def handler(request: web.Request, n: int) -> web.Response:
        text = (await request.json())["comment"]["text"]
        return _toxicity(0.9 if "idiot" in text else 0.1)

    async def run(url: str) -> list[float | None]:
        scorer = _scorer(url, fake)  # default qps 1
        try:
            return await scorer.score(["you idiot", "nice", "", "hello", "idiot again"])
        finally:
            await scorer.aclose()

    scores, seen = asyncio.run(_serve(handler, run))
    assert scores == [0.9, 0.1, None, 0.1, 0.9]
    assert len(seen) == 4  # the empty text is not sent
    assert all(
        b - a >= 1.0 - 1e-9 for a, b in zip(fake.granted, fake.granted[1:], strict=False)
    )  # at most 1 per second
    first = seen[0]
    assert first["body"]["requestedAttributes"] == {"TOXICITY": {}}
    assert first["body"]["languages"] == ["en"]
    assert first["headers"]["X-Goog-Api-Key"] == KEY
    assert KEY not in first["url"]  # the key never travels in the URL (which logs and errors may show)


def test_perspective_faster_quota_spaces_requests_by_one_over_qps() -> None:
    fake = FakeTime()

    async def handler(request: web.Request, n: int) -> web.Response:
        return _toxicity(0.2)

    async def run(url: str) -> list[float | None]:
        scorer = _scorer(url, fake, qps=4.0)
        try:
            return await scorer.score(["a", "b", "c", "d"])
        finally:
            await scorer.aclose()

    scores, _ = asyncio.run(_serve(handler, run))
    assert scores == [0.2] * 4
    gaps = [b - a for a, b in zip(fake.granted, fake.granted[1:], strict=False)]
    assert gaps and all(g >= 0.25 - 1e-9 for g in gaps)
    assert fake.granted[-1] < 1.0  # and not slower than needed


def test_perspective_retries_a_429_after_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()

    async def handler(request: web.Request, n: int) -> web.Response:
        if n == 1:
            return web.json_response({"error": {"code": 429}}, status=429, headers={"Retry-After": "7"})
        return _toxicity(0.42)

    async def run(url: str) -> list[float | None]:
        scorer = _scorer(url, fake)
        try:
            return await scorer.score(["retry me"])
        finally:
            await scorer.aclose()

    with caplog.at_level(logging.DEBUG):
        scores, seen = asyncio.run(_serve(handler, run))
    assert scores == [0.42]
    assert len(seen) == 2
    assert fake.granted[1] - fake.granted[0] >= 7.0
    assert KEY not in caplog.text


def test_perspective_gives_up_with_no_score_after_max_attempts() -> None:
    fake = FakeTime()

    async def handler(request: web.Request, n: int) -> web.Response:
        return web.Response(status=503)

    async def run(url: str) -> list[float | None]:
        scorer = _scorer(url, fake, max_attempts=3)
        try:
            return await scorer.score(["x"])
        finally:
            await scorer.aclose()

    scores, seen = asyncio.run(_serve(handler, run))
    assert scores == [None] and len(seen) == 3


def test_perspective_400_is_no_score_and_a_rejected_key_is_an_error_without_the_key() -> None:
    fake = FakeTime()

    async def declined(request: web.Request, n: int) -> web.Response:
        return web.json_response({"error": {"message": "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"}}, status=400)

    async def forbidden(request: web.Request, n: int) -> web.Response:
        return web.json_response({"error": {"message": "API key not valid"}}, status=403)

    async def run(url: str) -> list[float | None]:
        scorer = _scorer(url, fake)
        try:
            return await scorer.score(["texte"])
        finally:
            await scorer.aclose()

    assert asyncio.run(_serve(declined, run))[0] == [None]
    with pytest.raises(ScorerError, match=r"rejected the key in \$UNUSED") as err:
        asyncio.run(_serve(forbidden, run))
    assert KEY not in str(err.value)


def test_hf_label_choice() -> None:
    assert pick_label({0: "toxic", 1: "severe_toxic", 2: "obscene"}, None, "m") == 0
    assert pick_label({0: "non-toxic", 1: "toxic"}, None, "m") == 1
    assert pick_label({0: "LABEL_0", 1: "LABEL_1"}, None, "m") == 1
    assert pick_label({0: "neutral", 1: "hate"}, "HATE", "m") == 1
    with pytest.raises(ScorerError, match="labels neutral, hate; say which is toxic"):
        pick_label({0: "neutral", 1: "hate"}, None, "m")


def _tiny_classifier(folder: Path, multi_label: bool) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "bad", "idiot"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "neutral", 1: "toxic"} if multi_label else {0: "LABEL_0", 1: "LABEL_1"},
        label2id={"neutral": 0, "toxic": 1} if multi_label else {"LABEL_0": 0, "LABEL_1": 1},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("multi_label", [False, True])
def test_hf_scores_with_a_tiny_random_classifier(tmp_path: Path, multi_label: bool) -> None:
    folder = tmp_path / "tiny-toxic"
    _tiny_classifier(folder, multi_label)
    assert (folder / "model.safetensors").exists()
    scorer = get_scorer("hf", {"model": str(folder), "batch_size": 2})
    assert scorer.version.startswith(f"{folder}@")
    texts = ["you are nice", "you idiot", "", "bad bad bad"]
    scores = asyncio.run(scorer.score(texts))
    assert scores[2] is None
    values = [s for s in scores if s is not None]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    again = asyncio.run(scorer.score(["you idiot"]))  # batching and padding do not change a text's score
    assert again[0] == pytest.approx(scores[1], abs=1e-5)
    if not multi_label:  # softmax over two classes: the toxic class is 1 - the other
        assert 0.0 < values[0] < 1.0


def test_hf_names_the_model_and_how_to_get_it_when_weights_are_absent(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ScorerError, match=r"no local weights for model .*hf download"):
        get_scorer("hf", {"model": str(tmp_path / "missing-model")})
    with pytest.raises(ScorerError, match="needs a model"):
        get_scorer("hf")


def test_evaluate_imports_without_torch() -> None:
    code = (
        "import sys; import comptrust_evaluate, comptrust_evaluate.scorers, comptrust_evaluate.scorers.hf; "
        "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_hf_pickled_weights_only_when_asked(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    folder = tmp_path / "pickled"
    _tiny_classifier(folder, multi_label=False)
    weights = folder / "model.safetensors"
    torch.save(safetensors_torch.load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ScorerError, match="safetensors=false also accepts"):
        get_scorer("hf", {"model": str(folder)})
    scorer = get_scorer("hf", {"model": str(folder), "safetensors": "false"})
    (value,) = asyncio.run(scorer.score(["you are nice"]))
    assert value is not None and 0.0 < value < 1.0


def test_offline_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def missing(name: str, package: str | None = None) -> Any:
        if name == "profanity_check":
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ScorerError, match=r"comptrust-evaluate\[toxicity\].*--toxicity-scorer"):
        get_scorer("offline")
