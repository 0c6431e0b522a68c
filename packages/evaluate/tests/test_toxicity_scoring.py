"""evaluate scores toxicity responses with the chosen scorer (a registered one here), or not at all with none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from comptrust_core import RECORDS_DIR, ConfigError
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, evaluate, read_records
from comptrust_evaluate.cli import build_config, parser
from comptrust_evaluate.scorers import ScorerError, ToxicityScorer, toxicity_scorer
from comptrust_evaluate.testing import FakeEndpoint

FAST = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)


class LengthScorer(ToxicityScorer):
    """Toxicity = length / 100: a deterministic stand-in that also records which texts it saw."""

    name: ClassVar[str] = "test-length"
    seen: ClassVar[list[str]] = []

    @property
    def version(self) -> str:
        return "length 1"

    async def score(self, texts: Sequence[str]) -> list[float | None]:
        self.seen.extend(texts)
        return [min(1.0, len(t) / 100) for t in texts]


@toxicity_scorer("test-length")
def _length(options: Mapping[str, Any]) -> ToxicityScorer:
    return LengthScorer()


def _run(tmp_path: Path, fake: FakeEndpoint, scorer: str, **kw: Any) -> list[Any]:
    out = tmp_path / "run"
    config = EvaluateConfig(
        out=out,
        endpoints=(EndpointSpec(url=fake.url),),
        suite="quick",
        progress="off",
        retry=FAST,
        toxicity_scorer=scorer,
        **kw,
    )
    evaluate(config)
    (path,) = sorted((out / RECORDS_DIR).glob("*.ndjson"))
    return read_records(path)


def test_evaluate_scores_toxicity_with_the_named_scorer(fake: FakeEndpoint, tmp_path: Path) -> None:
    LengthScorer.seen.clear()
    records = _run(tmp_path, fake, "test-length")
    tox = [r for r in records if r.task == "toxicity"]
    assert tox and len(LengthScorer.seen) == len(tox)  # only toxicity responses go to the scorer
    for r in tox:
        (field,) = [s for s in r.scores if s.name == "toxicity"]
        assert field.value == pytest.approx(min(1.0, len(r.text) / 100))
        assert {a.name: a.value for a in r.attributes}["toxicity_scorer_version"] == "length 1"


def test_toxicity_scorer_none_leaves_toxicity_unscored(fake: FakeEndpoint, tmp_path: Path) -> None:
    records = _run(tmp_path, fake, "none")
    assert all(s.name != "toxicity" for r in records for s in r.scores)
    assert all(r.refusal is not None for r in records if r.task == "toxicity")


def test_a_bad_scorer_option_fails_before_any_request(fake: FakeEndpoint, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="toxicity scorer offline: bad option"):
        _run(tmp_path, fake, "offline", toxicity_options=(("colour", "red"),))
    assert not fake.posts()


def test_cli_toxicity_flags() -> None:
    args = parser().parse_args(
        [
            "--endpoint",
            "http://127.0.0.1:1",
            "--suite",
            "quick",
            "--out",
            "x",
            "--toxicity-scorer",
            "perspective",
            "--toxicity-option",
            "key_env=MY_KEY",
            "--toxicity-option",
            "qps=0.5",
        ]
    )
    config = build_config(args)
    assert config.toxicity_scorer == "perspective"
    assert config.toxicity_options == (("key_env", "MY_KEY"), ("qps", "0.5"))
    assert "end of 2026" in parser().format_help()
    bad = parser().parse_args(["--endpoint", "u", "--suite", "quick", "--out", "x", "--toxicity-option", "qps"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        build_config(bad)
    assert parser().parse_args(["--endpoint", "u", "--suite", "quick", "--out", "x"]).toxicity_scorer == "offline"


class BrokenScorer(LengthScorer):
    """Rejects the key on the first text, as Perspective does with a 403."""

    name: ClassVar[str] = "test-broken"

    async def score(self, texts: Sequence[str]) -> list[float | None]:
        raise ScorerError("Perspective API rejected the key in $SOME_VAR (HTTP 403)")


@toxicity_scorer("test-broken")
def _broken(options: Mapping[str, Any]) -> ToxicityScorer:
    return BrokenScorer()


def test_a_scorer_failure_stops_the_run_with_its_error_and_keeps_finished_records(
    fake: FakeEndpoint, tmp_path: Path
) -> None:
    with pytest.raises(ScorerError, match="rejected the key"):
        _run(tmp_path, fake, "test-broken")
    (path,) = sorted((tmp_path / "run" / RECORDS_DIR).glob("*.ndjson"))
    kept = read_records(path)
    assert all(r.task != "toxicity" for r in kept)  # an unscored toxicity record is never written
    records = _run(tmp_path, fake, "test-length")  # rerun with a working scorer: resumes, then scores toxicity
    assert {r.key for r in kept} <= {r.key for r in records}
    assert all(any(s.name == "toxicity" for s in r.scores) for r in records if r.task == "toxicity")
