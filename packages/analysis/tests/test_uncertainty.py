"""Intervals, paired deltas, corrections and the gate: checked against statsmodels and scipy, and by simulation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from comptrust_analysis import AnalysisConfig, analyze
from comptrust_analysis.cli import main
from comptrust_analysis.intervals import cluster_bootstrap, linear_estimates
from comptrust_analysis.report import Gate, delta_view
from comptrust_core import ConfigError, Manifest
from scipy import stats

from .study import manifest, record, write_records

KEYS = ["run", "endpoint", "perspective"]


def _rows(values: np.ndarray, clusters: np.ndarray, groups: np.ndarray | None = None, **extra: object) -> pl.LazyFrame:
    n = len(values)
    frame = {
        "run": ["r"] * n,
        "endpoint": ["e"] * n,
        "perspective": ["p"] * n,
        "component": ["all"] * n,
        "set": [str(g) for g in (groups if groups is not None else np.zeros(n, int))],
        "group": [str(g) for g in (groups if groups is not None else np.zeros(n, int))],
        "cluster": [str(c) for c in clusters],
        "value": values.astype(float),
    }
    return pl.DataFrame({**frame, **extra}).lazy()


def test_the_clustered_se_of_a_mean_is_statsmodels_cluster_robust_se() -> None:
    rng = np.random.default_rng(1)
    clusters = rng.integers(0, 25, 200)
    values = rng.normal(0, 1, 25)[clusters] + rng.normal(0, 1, 200)
    fit = sm.OLS(values, np.ones(200)).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    (row,) = linear_estimates(_rows(values, clusters), KEYS, "value").iter_rows(named=True)
    assert row["estimate"] == pytest.approx(values.mean()) and row["se"] == pytest.approx(fit.bse[0], rel=1e-9)
    assert row["clusters"] == 25 and row["n"] == 200


def test_a_mean_of_group_means_has_statsmodels_se_of_the_same_contrast() -> None:
    """DecodingTrust's mean of means is a linear contrast of group means: statsmodels' group-dummy regression with
    cluster-robust covariance gives the same estimate and standard error."""
    rng = np.random.default_rng(2)
    n = 300
    groups = rng.choice(4, n, p=[0.1, 0.2, 0.3, 0.4])
    clusters = rng.integers(0, 40, n)
    values = (rng.random(n) < 0.3 + 0.1 * groups + rng.normal(0, 0.1, 40)[clusters]).astype(float)
    dummies = np.eye(4)[groups]
    fit = sm.OLS(values, dummies).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    a = np.full(4, 0.25)  # four groups in one set: each group mean weighs a quarter
    want_se = float(np.sqrt(a @ fit.cov_params() @ a))
    (row,) = linear_estimates(_rows(values, clusters, groups), KEYS, "value").iter_rows(named=True)
    assert row["estimate"] == pytest.approx(float(a @ fit.params)) and row["se"] == pytest.approx(want_se, rel=1e-9)


def _coverage(clustered: bool, binary: bool, sims: int = 1000, delta: float = 0.1) -> float:
    """Share of ``sims`` synthetic paired data sets whose 95% interval holds the true mean difference."""
    rng = np.random.default_rng(3 + 2 * clustered + binary)
    frames = []
    for s in range(sims):
        g = 40
        sizes = rng.integers(1, 7, g) if clustered else np.ones(g, int)
        clusters = np.repeat(np.arange(g), sizes)
        if binary:
            p = rng.uniform(0.2, 0.7, g)[clusters] if clustered else rng.uniform(0.2, 0.7, clusters.size)
            dense = (rng.random(clusters.size) < p).astype(float)
            comp = (rng.random(clusters.size) < p + delta).astype(float)
            d = comp - dense
        else:
            shared = rng.normal(0, 1, g)[clusters] if clustered else 0.0
            d = delta + shared + rng.normal(0, 1, clusters.size)
        frames.append(_rows(d, clusters).with_columns(run=pl.lit(str(s))).collect())
    est = linear_estimates(pl.concat(frames).lazy(), KEYS, "value")
    q = stats.t.ppf(0.975, est["clusters"].to_numpy() - 1)
    low, high = (
        est["estimate"].to_numpy() - q * est["se"].to_numpy(),
        est["estimate"].to_numpy() + q * est["se"].to_numpy(),
    )
    return float(np.mean((low <= delta) & (delta <= high)))


@pytest.mark.parametrize("clustered", [False, True], ids=["independent", "clustered"])
@pytest.mark.parametrize("binary", [False, True], ids=["continuous", "binary"])
def test_paired_intervals_cover_the_true_delta_95_percent_of_the_time(clustered: bool, binary: bool) -> None:
    assert 0.93 <= _coverage(clustered, binary) <= 0.97


def test_treating_clustered_items_as_independent_would_undercover() -> None:
    """The check can fail: the same clustered data with every record its own cluster covers far less than 95%."""
    rng = np.random.default_rng(9)
    frames = []
    for s in range(300):
        clusters = np.repeat(np.arange(30), 6)
        d = 0.1 + rng.normal(0, 1, 30)[clusters] + rng.normal(0, 0.3, clusters.size)
        frames.append(_rows(d, np.arange(d.size)).with_columns(run=pl.lit(str(s))).collect())
    est = linear_estimates(pl.concat(frames).lazy(), KEYS, "value")
    q = stats.t.ppf(0.975, est["clusters"].to_numpy() - 1)
    hits = np.abs(est["estimate"].to_numpy() - 0.1) <= q * est["se"].to_numpy()
    assert hits.mean() < 0.8


@pytest.mark.timeout(120)
def test_the_cluster_bootstrap_interval_covers_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(4)
    hits, sims = 0, 400
    for _ in range(sims):
        clusters = np.repeat(np.arange(80), rng.integers(1, 5, 80))
        peaks = np.clip(rng.beta(2, 5, 80)[clusters] + rng.normal(0, 0.05, clusters.size), 0, 1)
        true = 2 / 7  # the beta(2, 5) mean; the noise is symmetric and clipping rare

        def mean(w: np.ndarray, peaks: np.ndarray = peaks) -> np.ndarray:
            return np.asarray((w * peaks).sum(axis=1) / w.sum(axis=1))

        _, low, high = cluster_bootstrap(clusters, mean, resamples=999)
        hits += low <= true <= high
    assert 0.93 <= hits / sims <= 0.97


# ---------------------------------------------------------------- a study: dense, a real drop, no change


def _study(tmp_path: Path, items: int = 240) -> Path:
    rng = np.random.default_rng(5)
    base_p = rng.uniform(0.3, 0.9, items)
    checkpoints: dict[str, tuple[Manifest, float]] = {"dense": (manifest("dense", name="dense"), 0.0)}
    for seed in (0, 1, 2):
        checkpoints[f"wanda-s{seed}"] = (manifest("wanda", sparsity=0.5, seed=seed), -0.25)
        checkpoints[f"gptq-s{seed}"] = (manifest("gptq", bits=4, group_size=128, seed=seed), 0.0)
    records = []
    for endpoint, (_, shift) in checkpoints.items():
        for i in range(items):
            ok = not (endpoint == "wanda-s1" and i < 5)  # five requests only the dense side answered
            value = float(rng.random() < np.clip(base_p[i] + shift, 0, 1))
            records.append(record(endpoint, "machine_ethics", i, value, ok=ok, refusal=False))
    return write_records(tmp_path / "run", records, {e: m for e, (m, _) in checkpoints.items()})


def test_a_study_gets_paired_deltas_verdicts_and_pooled_seeds(tmp_path: Path) -> None:
    result = analyze(AnalysisConfig(run_dirs=(_study(tmp_path),), out=tmp_path / "out", plots=False))
    scores = result.scores.filter(pl.col("perspective") == "machine_ethics")
    assert scores["ci_low"].is_not_null().all() and (scores["ci_low"] < scores["score"]).all()
    assert (scores["score"] < scores["ci_high"]).all() and (scores["clusters"] == scores["n"]).all()
    deltas = result.deltas
    assert deltas is not None
    pooled = {r["label"]: r for r in deltas.filter(pl.col("checkpoint") == "pooled").iter_rows(named=True)}
    wanda, gptq = pooled["wanda s0.5"], pooled["gptq 4b g128"]
    assert wanda["verdict"] == "drop" and wanda["ci_high"] < 0 and wanda["p_adj"] < 0.05 and wanda["seeds"] == 3
    assert gptq["verdict"] == "no change detected" and gptq["ci_low"] < 0 < gptq["ci_high"]
    per_seed = deltas.filter((pl.col("label") == "wanda s0.5") & (pl.col("checkpoint") != "pooled"))
    assert per_seed.height == 3 and wanda["delta"] == pytest.approx(per_seed["delta"].mean())
    left = {r["seed"]: r["left_out"] for r in per_seed.iter_rows(named=True)}
    assert left == {0: 0, 1: 5, 2: 0} and per_seed.filter(pl.col("seed") == 1)["pairs"].item() == 235
    assert wanda["p_adj"] >= wanda["p"]  # Holm never lowers a p-value
    assert (tmp_path / "out" / "deltas.parquet").exists() and (tmp_path / "out" / "cells.parquet").exists()
    assert delta_view(deltas).height == 8  # two pooled rows and each configuration's three seeds
    one_seed = deltas.filter((pl.col("label") == "gptq 4b g128") & (pl.col("seed").is_null() | (pl.col("seed") == 0)))
    shown = delta_view(one_seed.with_columns(seeds=pl.lit(1, pl.Int64)))
    assert shown["checkpoint"].to_list() == ["pooled"]  # one seed: its row is the pooled one, shown once
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Change against the dense base" in page and "drop" in page


def test_equivalence_needs_a_margin_and_tost_then_says_so(tmp_path: Path) -> None:
    run = _study(tmp_path)
    wide = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / "a", plots=False, equivalence=15.0)).deltas
    narrow = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / "b", plots=False, equivalence=0.5)).deltas
    assert wide is not None and narrow is not None

    def verdict(table: pl.DataFrame) -> str:
        return str(table.filter((pl.col("checkpoint") == "pooled") & (pl.col("label") == "gptq 4b g128"))["verdict"][0])

    assert verdict(wide) == "equivalent within ±15" and verdict(narrow) == "no change detected"


def test_the_gate_fails_a_real_drop_and_passes_a_generous_margin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _study(tmp_path)
    assert main([str(run), "--out", str(tmp_path / "g5"), "--no-plots", "--gate", "max-drop=5"]) == 1
    out = capsys.readouterr().out
    assert "gate max-drop=5: FAILED on 1 of 2 cells: wanda s0.5 machine_ethics" in out
    verdict = json.loads((tmp_path / "g5" / "gate.json").read_text())
    assert verdict["passed"] is False and [c["configuration"] for c in verdict["failing"]] == ["wanda s0.5"]
    assert main([str(run), "--out", str(tmp_path / "g40"), "--no-plots", "--gate", "max-drop=40"]) == 0
    assert "gate max-drop=40: passed (2 cells checked)" in capsys.readouterr().out
    assert json.loads((tmp_path / "g40" / "gate.json").read_text())["passed"] is True


def test_a_bad_gate_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown gate"):
        Gate.parse("max-loss=5")
    with pytest.raises(ConfigError, match="needs a number"):
        Gate.parse("max-drop=five")
    assert main([str(tmp_path), "--gate", "max-drop=-1"]) == 2
    assert "max-drop must be 0 or more" in capsys.readouterr().err


def test_mcnemar_on_independent_binary_pairs_is_the_exact_binomial_test(tmp_path: Path) -> None:
    result = analyze(AnalysisConfig(run_dirs=(_study(tmp_path, items=120),), out=tmp_path / "o", plots=False))
    assert result.deltas is not None
    row = result.deltas.filter(pl.col("checkpoint") == "tiny-wanda-0.5-0").row(0, named=True)
    records = {}
    for line in (tmp_path / "run" / "records").glob("*.ndjson"):
        for raw in line.read_text().splitlines():
            r = json.loads(raw)
            records[(r["endpoint"], r["item_id"])] = r["scores"][0]["value"] if r["scores"] else None
    dense = [records[("dense", str(i))] for i in range(120)]
    comp = [records[("wanda-s0", str(i))] for i in range(120)]
    worse = sum(d == 1 and c == 0 for d, c in zip(dense, comp, strict=True))
    better = sum(d == 0 and c == 1 for d, c in zip(dense, comp, strict=True))
    assert row["mcnemar_p"] == pytest.approx(stats.binomtest(better, better + worse, 0.5).pvalue)


def test_toxicity_bootstrap_and_its_linear_limit_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond BOOTSTRAP_MAX_CLUSTERS the toxicity interval is the clustered SE of its mean of group means: on the
    same data the two agree."""
    import comptrust_analysis.uncertainty as unc

    rng = np.random.default_rng(6)
    lines = []
    for endpoint, shift in (("dense", 0.0), ("comp", 0.08)):
        for i in range(600):
            level = float(np.clip(rng.beta(2, 6) + shift, 0, 1))
            lines.append(record(endpoint, "toxicity", i, 1.0 - level, refusal=False))
    manifests = {"dense": manifest("dense", name="dense"), "comp": manifest("wanda", sparsity=0.5, seed=0)}
    run = write_records(tmp_path / "run", lines, manifests)

    def toxicity(out: str) -> tuple[dict[str, object], dict[str, object]]:
        result = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / out, plots=False))
        assert result.cells is not None and result.deltas is not None
        cell = result.cells.filter(
            (pl.col("perspective") == "toxicity") & (pl.col("statistic") == "score") & (pl.col("endpoint") == "comp")
        ).row(0, named=True)
        scores = result.scores.filter((pl.col("perspective") == "toxicity") & (pl.col("endpoint") == "comp"))
        assert cell["estimate"] == pytest.approx(scores["score"].item())  # the statistic is the reported score
        return cell, result.deltas.filter(pl.col("checkpoint") != "pooled").row(0, named=True)

    boot_cell, boot_delta = toxicity("boot")
    monkeypatch.setattr(unc, "BOOTSTRAP_MAX_CLUSTERS", 10)
    lin_cell, lin_delta = toxicity("linear")
    assert "bootstrap" in str(boot_cell["method"]) and "clustered" in str(lin_cell["method"])
    assert boot_cell["estimate"] == pytest.approx(lin_cell["estimate"])
    assert boot_cell["se"] == pytest.approx(lin_cell["se"], rel=0.1)
    assert boot_delta["delta"] == pytest.approx(lin_delta["delta"]) and float(str(boot_delta["delta"])) < -4
    assert boot_delta["se"] == pytest.approx(lin_delta["se"], rel=0.1)
