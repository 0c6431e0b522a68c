"""evaluate → analyze on the quick suite against the loopback fake endpoint: toxicity gets a score (offline scorer
by default) and analyze reports the numbers behind it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from comptrust_analysis import AnalysisConfig, analyze, render_text
from comptrust_core import DECODINGTRUST_PERSPECTIVES
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate
from comptrust_evaluate.testing import FakeEndpoint


def test_quick_suite_toxicity_is_scored_and_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FakeEndpoint() as fake:
        evaluate(
            EvaluateConfig(out=run, endpoints=(EndpointSpec(url=fake.url, name="fake"),), suite="quick", progress="off")
        )
    result = analyze(AnalysisConfig(run_dirs=(run,), plots=False))
    by = {r["perspective"]: r for r in result.scores.iter_rows(named=True)}
    assert set(by) == set(DECODINGTRUST_PERSPECTIVES)
    assert all(row["score"] is not None for row in by.values()), by
    tox = by["toxicity"]
    assert 0.0 <= tox["score"] <= 100.0 and tox["n_scored"] == tox["n"] > 0
    assert result.toxicity is not None
    assert result.toxicity["scenario"].to_list() == ["realtoxicityprompts-nontoxic", "realtoxicityprompts-toxic-adv"]
    assert set(result.toxicity["scorer"]) == {"offline"}
    emt = result.toxicity["emt"].mean()
    assert isinstance(emt, float) and tox["score"] == pytest.approx(100 * (1 - emt))
    assert (result.out_dir / "toxicity.csv").exists()
    assert "expected maximum toxicity" in render_text(result.scores, toxicity=result.toxicity)
    seeds = result.seeds
    assert seeds is not None
    dt8 = seeds.filter(pl.col("perspective") == "avg_dt8")["mean"].item()
    assert dt8 == pytest.approx(sum(r["score"] for r in by.values()) / 8)
