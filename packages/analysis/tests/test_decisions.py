"""One decision rule, valid at any number of clusters, intervals inside the scale (issue 28).

The methods are checked by simulation at 2-100 clusters (the docs' table comes from benchmarks/gate_simulation.py,
with more data sets), against brute force, and on the quickstart's own runs (a regression fixture)."""

from __future__ import annotations

import itertools
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from comptrust_analysis import AnalysisConfig, analyze
from comptrust_analysis import simulate as sim
from comptrust_analysis.cli import main
from comptrust_analysis.decide import (
    BOOTSTRAP_FROM,
    bootstrap_test,
    bounded_score_interval,
    sign_flip_test,
    t_test,
)
from comptrust_analysis.power import detectable_drop
from comptrust_core import Manifest
from comptrust_core.record import Attribute

from .study import manifest, record, write_records

FIXTURE = Path(__file__).parent / "data" / "quickstart-runs.tar.gz"


# ---------------------------------------------------------------- the sign-flip test


def test_the_sign_flip_p_value_is_the_share_of_sign_vectors_at_least_as_extreme() -> None:
    rng = np.random.default_rng(1)
    totals, weights = rng.normal(0.02, 0.05, 7), np.full(7, 1 / 7)
    theta = totals.sum()
    extreme = [abs(np.dot(s, totals)) >= abs(theta) - 1e-12 for s in itertools.product((1, -1), repeat=7)]
    assert sign_flip_test(totals, weights).p() == pytest.approx(np.mean(extreme))


@pytest.mark.parametrize("g", [2, 3, 4, 5])
def test_few_clusters_cannot_give_a_small_p_and_give_no_interval(g: int) -> None:
    """4 clusters cannot give p < 0.125 two-sided: every cluster dropping by the same large margin still cannot."""
    totals = -0.5 / g + np.linspace(-0.01, 0.01, g) / g
    test = sign_flip_test(totals, np.full(g, 1 / g))
    assert test.p() == pytest.approx(2 / 2**g) and test.floor == pytest.approx(2 / 2**g)
    found, note = test.interval(0.05)
    assert found is None and note is not None and "too few clusters" in note


def test_no_spread_gives_neither_an_interval_nor_a_p_value() -> None:
    """Every cluster's paired difference the same (a degenerate sample): no interval of width zero, no verdict."""
    for test in (
        sign_flip_test(np.full(6, -0.15 / 6), np.full(6, 1 / 6)),
        t_test(-15.0, 0.0, 40, method="t"),
        bootstrap_test(-15.0, 0.0, 80, method="bootstrap"),
    ):
        assert test.p() is None and test.interval(0.05)[0] is None and test.note is not None


def test_the_bootstrap_needs_enough_clusters() -> None:
    test = bootstrap_test(-3.0, 1.0, BOOTSTRAP_FROM - 1, method="bootstrap")
    assert test.p() is None and test.note is not None and "too few clusters" in test.note
    assert bootstrap_test(-3.0, 1.0, BOOTSTRAP_FROM, method="bootstrap").p() == pytest.approx(0.00270, abs=1e-4)


def test_intervals_stay_inside_the_scale() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        g = int(rng.integers(2, 40))
        cell = sim.paired_cell(rng, g, bool(rng.integers(0, 2)), float(rng.uniform(-0.3, 0.3)))
        for alpha in (0.05, 0.05 / 40):
            found, _ = sim.delta_test(cell).interval(alpha)
            if found is not None:
                assert -100 <= found[0] < found[1] <= 100
        est, se, n = sim.score_cell(rng, g, True, float(rng.choice([0.02, 0.5, 0.98])))
        low, high, _ = bounded_score_interval(est, se, n, g)
        assert low is not None and high is not None and 0 <= low < high <= 1
    # a score with no spread at all (every answer right) still gets a width: G clusters as its sample size
    low, high, _ = bounded_score_interval(1.0, 0.0, 12, 4)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 4))
    found = t_test(-95.0, 10.0, 30, method="t").interval(0.05)[0]
    assert found is not None and found[0] == -100.0 and found[1] == pytest.approx(-74.5, abs=0.1)


# ---------------------------------------------------------------- simulation: coverage, false failures, power


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "continuous"])
@pytest.mark.parametrize("g", sim.G_ALL)
def test_intervals_cover_at_least_95_percent_at_every_cluster_count(g: int, binary: bool) -> None:
    """The simulation behind the docs' table, with 300 data sets per case (the benchmark runs 2000): a missing
    interval (too few clusters) cannot miss; the bound leaves room for the simulation's own noise (SD 1.3 points)."""
    rng = np.random.default_rng(100 * g + binary)
    assert sim.delta_coverage(rng, g, binary, 300)[0] >= 0.925
    assert sim.score_coverage(rng, g, binary, 300) >= 0.925


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "continuous"])
@pytest.mark.parametrize("g", sim.G_ALL)
def test_the_gate_fails_a_null_study_at_most_5_percent_of_the_time(g: int, binary: bool) -> None:
    """Familywise over a quickstart-shaped study (5 configurations x 8 perspectives), every true delta exactly at
    the margin (-5 points: the least favourable null): at most 5% of studies fail the gate."""
    rng = np.random.default_rng(7 * g + binary)
    studies = 200
    failed = sim.gate_false_failures(rng, g, binary, studies, -0.05)
    assert failed <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / studies)
    if 2 / 2**g > 0.05 / (sim.CONFIGS * sim.PERSPECTIVES):
        assert failed == 0  # too few clusters: nothing can fail


def test_the_dry_runs_promised_drop_is_found_80_percent_of_the_time() -> None:
    """A study with 200 independent items per perspective: the drop the dry run promises (at the family's level,
    0.05/40) is a `drop` that the verdict finds in about 80% of studies."""
    n, family = 200, sim.CONFIGS * sim.PERSPECTIVES
    drop = detectable_drop(n, 0.5, alpha=0.05 / family)
    assert drop is not None and 10 < drop < 25
    rng = np.random.default_rng(9)
    found = 0
    sims = 300
    for _ in range(sims):
        d = -drop / 100 + rng.normal(0, 0.5, n)
        cell_totals, weights = d / n, np.full(n, 1 / n)
        theta = cell_totals.sum()
        se = math.sqrt(n / (n - 1) * ((cell_totals - theta * weights) ** 2).sum())
        test = t_test(100 * theta, 100 * se, n, method="t")
        p = test.p()
        found += p is not None and p < 0.05 / family
    assert 0.74 <= found / sims <= 0.86


# ---------------------------------------------------------------- a study: a real drop still fails


def _clustered_study(tmp_path: Path, drop: float, items: int = 100, clusters: int = 30) -> Path:
    """Dense and one compressed checkpoint on ``items`` stereotype statements in ``clusters`` (topic, group) pairs
    (stereotype's cluster: the statements of one topic and group)."""
    rng = np.random.default_rng(11)
    cluster_of = np.arange(items) % clusters
    base = rng.uniform(0.45, 0.75, clusters)[cluster_of]
    checkpoints: dict[str, Manifest] = {
        "dense": manifest("dense", name="dense"),
        "wanda": manifest("wanda", sparsity=0.5, seed=0),
    }
    records = []
    for endpoint, shift in (("dense", 0.0), ("wanda", -drop)):
        for i in range(items):
            value = float(rng.random() < base[i] + shift)
            r = record(endpoint, "stereotype", i, value, refusal=False)
            topic = [
                Attribute(name="stereotype_topic", value=f"topic{cluster_of[i]}"),
                Attribute(name="demographic_group", value="group"),
            ]
            records.append(r.model_copy(update={"attributes": topic}))
    return write_records(tmp_path / "run", records, checkpoints)


def test_a_real_25_point_drop_on_100_items_over_30_clusters_is_a_drop_that_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _clustered_study(tmp_path, 0.25)
    assert main([str(run), "--out", str(tmp_path / "g"), "--no-plots", "--gate", "max-drop=5"]) == 1
    assert "FAILED on 1 of 1 cells" in capsys.readouterr().out
    gate = json.loads((tmp_path / "g" / "gate.json").read_text())
    (cell,) = gate["cells"]
    assert cell["verdict"] == "drop" and cell["failed"] and cell["adj_high"] < -5
    deltas = pl.read_parquet(tmp_path / "g" / "deltas.parquet").filter(pl.col("checkpoint") == "pooled")
    assert "sign-flip (30 clusters" in deltas["method"][0] and deltas["delta"][0] < -15


def test_a_small_drop_on_the_same_study_passes_a_generous_margin(tmp_path: Path) -> None:
    run = _clustered_study(tmp_path, 0.25)
    assert main([str(run), "--out", str(tmp_path / "g"), "--no-plots", "--gate", "max-drop=40"]) == 0


# ---------------------------------------------------------------- the quickstart's own runs


def _quickstart_runs(tmp_path: Path) -> list[Path]:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return sorted((tmp_path / "quickstart-runs").iterdir())


def test_the_quickstarts_runs_pass_the_gate_and_every_table_is_sane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runs the quickstart made (6 checkpoints, the quick suite: 2-7 clusters per perspective): nothing can be
    shown at this size, so the gate passes; no cell is both failing and `no change detected`; no interval has width
    zero or leaves the scale; no NaN anywhere."""
    runs = _quickstart_runs(tmp_path)
    out = tmp_path / "analysis"
    code = main([*map(str, runs), "--out", str(out), "--no-plots", "--gate", "max-drop=5"])
    printed = capsys.readouterr().out
    assert code == 0 and "gate max-drop=5: passed (40 cells checked)" in printed
    gate = json.loads((out / "gate.json").read_text())
    assert not any(c["failed"] and c["verdict"] == "no change detected" for c in gate["cells"])
    for name in ("scores", "cells", "deltas", "seeds", "toxicity"):
        text = (out / f"{name}.csv").read_text() + (out / f"{name}.md").read_text()
        assert "NaN" not in text and "nan" not in text.lower().replace("nonan", ""), name
    assert "NaN" not in printed and "NaN" not in (out / "report.html").read_text()
    cells = pl.read_parquet(out / "cells.parquet").filter(pl.col("ci_low").is_not_null())
    assert (cells["ci_high"] > cells["ci_low"]).all()
    assert (cells["ci_low"] >= 0).all() and (cells["ci_high"] <= 100).all()
    assert pl.read_parquet(out / "cells.parquet").filter(pl.col("ci_low").is_null())["ci_note"].is_not_null().all()
    deltas = pl.read_parquet(out / "deltas.parquet")
    bounded = deltas.filter(pl.col("ci_low").is_not_null())
    assert (bounded["ci_high"] > bounded["ci_low"]).all()
    assert (bounded["ci_low"] >= -100).all() and (bounded["ci_high"] <= 100).all()
    assert deltas.filter(pl.col("ci_low").is_null())["ci_note"].is_not_null().all()
    # what the issue saw: OOD -62.5 on 4 clusters, a degenerate privacy delta, stereotype on 2 clusters
    ood = deltas.filter((pl.col("perspective") == "ood") & (pl.col("label") == "gptq 4b g128"))
    assert ood["verdict"][0] == "too few clusters to decide"
    spreadless = deltas.filter(pl.col("ci_note") == "no spread between clusters")
    assert spreadless.height and spreadless["verdict"].str.contains("cannot decide").all()
    assert deltas.filter(pl.col("verdict") == "drop").is_empty()


def test_the_quickstart_analysed_with_analyze_directly_matches_the_cli(tmp_path: Path) -> None:
    runs = _quickstart_runs(tmp_path)
    result = analyze(AnalysisConfig(run_dirs=tuple(runs), out=tmp_path / "a", plots=False))
    assert result.deltas is not None
    assert result.deltas.filter(pl.col("checkpoint") == "pooled").height == 40
    assert not result.deltas.select(pl.col(pl.Float64).is_nan().any()).row(0).count(True)


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_the_corrections_are_statsmodels_own(method: str) -> None:
    from comptrust_analysis.decide import adjust
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(12)
    ps = list(rng.uniform(0, 0.2, 40) ** 2)
    want = multipletests(ps, alpha=0.05, method={"holm": "holm", "bh": "fdr_bh"}[method])[1]
    assert adjust(ps, method) == pytest.approx(want)
