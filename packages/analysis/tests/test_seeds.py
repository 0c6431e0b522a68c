from __future__ import annotations

import statistics
from pathlib import Path

import polars as pl
import pytest
from comptrust_analysis import checkpoint_table, load_runs, perspective_scores, seed_summary, seed_wide, with_aggregates
from comptrust_analysis.cli import main
from comptrust_analysis.seeds import AVG_DT6, AVG_DT8, AVG_PRESENT, DT6_PERSPECTIVES, PERSPECTIVE_ORDER
from comptrust_core import Manifest

from .study import manifest, write_run

ADV = [0.50, 0.51, 0.49]
OOD = [0.40, 0.43, 0.39]


def _study(tmp_path: Path) -> pl.DataFrame:
    cps: dict[str, tuple[Manifest, dict[str, float | None]]] = {
        "dense": (manifest("dense"), {"advglue": 0.5, "ood": 0.6, "toxicity": None}),
        "g3": (manifest("gptq", bits=3, group_size=128, seed=0), {"advglue": 0.1, "ood": 0.6, "toxicity": None}),
    }
    for seed, (a, o) in enumerate(zip(ADV, OOD, strict=True)):
        cps[f"g4s{seed}"] = (
            manifest("gptq", bits=4, group_size=128, seed=seed),
            {"advglue": a, "ood": o, "toxicity": None},
        )
    run = write_run(tmp_path / "run", cps)
    runs = load_runs([run])
    return seed_summary(perspective_scores(runs), checkpoint_table(runs))


def test_seed_groups_mean_std_and_flags(tmp_path: Path) -> None:
    summary = _study(tmp_path)
    g4 = {r["perspective"]: r for r in summary.filter(pl.col("label") == "gptq 4b g128").iter_rows(named=True)}
    assert g4["advglue"]["n_seeds"] == 3 and g4["advglue"]["seeds"] == "0,1,2"
    assert g4["advglue"]["mean"] == pytest.approx(100 * statistics.mean(ADV))
    assert g4["advglue"]["std"] == pytest.approx(100 * statistics.stdev(ADV))
    assert g4["advglue"]["delta"] == pytest.approx(0.0, abs=1e-9) and g4["advglue"]["flag"] is False
    assert g4["ood"]["delta"] == pytest.approx(100 * statistics.mean(OOD) - 60)
    assert g4["ood"]["flag"] is True  # |Δ| ≈ 19 > 2 × 2.1
    assert g4["toxicity"]["mean"] is None and g4["toxicity"]["flag"] is None
    g3 = {r["perspective"]: r for r in summary.filter(pl.col("label") == "gptq 3b g128").iter_rows(named=True)}
    assert g3["advglue"]["n_seeds"] == 1 and g3["advglue"]["std"] is None
    assert g3["advglue"]["delta"] == pytest.approx(-40) and g3["advglue"]["flag"] is None  # one seed: unknown
    dense = summary.filter(pl.col("method") == "dense")
    assert dense["delta"].is_null().all() and dense["label"][0] == "dense"
    assert summary["label"][0] == "dense"  # the dense base comes first
    present = g4[AVG_PRESENT]
    assert present["mean"] == pytest.approx(100 * statistics.mean([(a + o) / 2 for a, o in zip(ADV, OOD, strict=True)]))
    assert g4[AVG_DT6]["mean"] is None  # four of the six perspectives are missing


def test_seed_wide_marks_flags(tmp_path: Path) -> None:
    wide = seed_wide(_study(tmp_path))
    assert wide.columns == ["perspective", "dense", "gptq 3b g128", "gptq 4b g128"]
    assert wide["perspective"].to_list() == ["toxicity", "advglue", "ood", AVG_PRESENT, AVG_DT8, AVG_DT6]
    row = dict(zip(wide.columns, wide.row(2), strict=True))
    assert row["gptq 4b g128"].endswith("!)") and row["gptq 3b g128"].endswith("?)")
    assert row["dense"] == "60.0"


def test_dt6_mean_needs_all_six() -> None:
    rows: list[tuple[str, str, float | None]] = [("a", p, 50.0 + i) for i, p in enumerate(DT6_PERSPECTIVES)]
    rows.append(("a", "toxicity", 0.0))
    rows += [("b", p, 70.0) for p in DT6_PERSPECTIVES[:5]] + [("b", "fairness", None)]
    scores = pl.DataFrame(
        rows, schema={"endpoint": pl.String, "perspective": pl.String, "score": pl.Float64}, orient="row"
    )
    out = with_aggregates(scores.with_columns(run=pl.lit("r")))
    got = {(r["endpoint"], r["perspective"]): r["score"] for r in out.iter_rows(named=True)}
    assert got[("a", AVG_DT6)] == pytest.approx(52.5)
    assert got[("a", AVG_PRESENT)] == pytest.approx((sum(50.0 + i for i in range(6)) + 0.0) / 7)
    assert got[("b", AVG_DT6)] is None
    assert got[("b", AVG_PRESENT)] == pytest.approx(70.0)
    assert got[("a", AVG_DT8)] is None  # stereotype is missing


def test_dt8_mean_is_the_mean_of_all_eight() -> None:
    rows = [("a", p, 10.0 * (i + 1)) for i, p in enumerate(PERSPECTIVE_ORDER)] + [("a", "mmlu", 0.0)]
    rows += [("b", p, 50.0) for p in PERSPECTIVE_ORDER[:7]]
    scores = pl.DataFrame(
        rows, schema={"endpoint": pl.String, "perspective": pl.String, "score": pl.Float64}, orient="row"
    )
    out = with_aggregates(scores.with_columns(run=pl.lit("r")))
    got = {(r["endpoint"], r["perspective"]): r["score"] for r in out.iter_rows(named=True)}
    assert len(PERSPECTIVE_ORDER) == 8
    assert got[("a", AVG_DT8)] == pytest.approx(45.0)  # MMLU is not a DecodingTrust perspective
    assert got[("a", AVG_DT6)] == pytest.approx(
        sum(10.0 * (PERSPECTIVE_ORDER.index(p) + 1) for p in DT6_PERSPECTIVES) / 6
    )
    assert got[("b", AVG_DT8)] is None and got[("b", AVG_PRESENT)] == pytest.approx(50.0)


def test_analyze_writes_seed_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _study(tmp_path)
    out = tmp_path / "out"
    assert main([str(tmp_path / "run"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "across calibration seeds" in printed and "gptq 4b g128" in printed
    back = pl.read_parquet(out / "seeds.parquet")
    assert back.equals(pl.read_csv(out / "seeds.csv", schema=back.schema))
    md = (out / "seeds.md").read_text()
    assert "| perspective | dense | gptq 3b g128 | gptq 4b g128 |" in md and "2 × seed spread" in md


def test_endpoints_without_manifest_stay_apart(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"x": (None, {"advglue": 0.5}), "y": (None, {"advglue": 0.7})})
    runs = load_runs([run])
    summary = seed_summary(perspective_scores(runs), checkpoint_table(runs))
    adv = summary.filter(pl.col("perspective") == "advglue")
    assert sorted(adv["label"].to_list()) == ["x", "y"] and adv["n_seeds"].to_list() == [1, 1]
    assert adv["delta"].is_null().all() and adv["flag"].is_null().all()


def test_dt6_across_seeds_needs_every_seed() -> None:
    six = dict.fromkeys(DT6_PERSPECTIVES, 60.0)
    rows = [("s0", p, v) for p, v in six.items()] + [("s1", p, v) for p, v in six.items() if p != "fairness"]
    scores = pl.DataFrame(rows, schema=["endpoint", "perspective", "score"], orient="row").with_columns(
        run=pl.lit("r"), refusal_rate=pl.lit(0.0)
    )
    meta = pl.DataFrame(
        {"run": ["r", "r"], "endpoint": ["s0", "s1"], "checkpoint": ["s0", "s1"], "calib_seed": [0, 1]}
    ).with_columns(
        base_model=pl.lit("tiny"),
        base_hash=pl.lit("sha256:tiny"),
        method=pl.lit("gptq"),
        bits=pl.lit(4, dtype=pl.Int64),
        group_size=pl.lit(None, dtype=pl.Int64),
        target_sparsity=pl.lit(None, dtype=pl.Float64),
        pattern=pl.lit(None, dtype=pl.String),
        serving=pl.lit(None, dtype=pl.String),
    )
    summary = seed_summary(scores, meta)
    got = {r["perspective"]: r for r in summary.iter_rows(named=True)}
    assert got[AVG_DT6]["mean"] is None and got[AVG_DT6]["n_seeds"] == 2
    assert got["advglue"]["mean"] == pytest.approx(60.0) and got[AVG_PRESENT]["mean"] == pytest.approx(60.0)


def test_mmlu_accuracy_is_its_own_row_and_not_a_trust_perspective(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run",
        {"dense": (manifest("dense"), {"advglue": 0.5, "ood": 0.7, "mmlu": 0.25})},
    )
    scores = with_aggregates(perspective_scores(load_runs([run])))
    by = dict(zip(scores["perspective"], scores["score"], strict=True))
    assert by["mmlu"] == pytest.approx(25.0)  # accuracy over its items, in %
    assert by[AVG_PRESENT] == pytest.approx(60.0)  # mean of advglue and ood only


def test_one_checkpoint_on_two_engines_is_two_columns_never_two_seeds(tmp_path: Path) -> None:
    from comptrust_analysis import AnalysisConfig, analyze, side_by_side

    dense, gptq = manifest("dense"), manifest("gptq", bits=4, group_size=128, seed=0)
    embedded = write_run(
        tmp_path / "embedded",
        {"dense": (dense, {"advglue": 0.6}), "gptq": (gptq, {"advglue": 0.5})},
        serving=("embedded", "float32"),
    )
    vllm = write_run(
        tmp_path / "vllm",
        {"dense": (dense, {"advglue": 0.8}), "gptq": (gptq, {"advglue": 0.7})},
        serving=("vllm", "bfloat16"),
    )
    result = analyze(AnalysisConfig(run_dirs=(embedded, vllm), out=tmp_path / "out", plots=False))
    labels = set(result.scores["checkpoint"])
    assert labels == {
        f"{dense.name} [embedded/float32]",
        f"{dense.name} [vllm/bfloat16]",
        f"{gptq.name} [embedded/float32]",
        f"{gptq.name} [vllm/bfloat16]",
    }
    assert set(result.scores["engine"]) == {"embedded", "vllm"}
    assert result.seeds is not None
    advglue = {r["label"]: r for r in result.seeds.filter(pl.col("perspective") == "advglue").iter_rows(named=True)}
    assert all(r["n_seeds"] == 1 for r in advglue.values())  # never pooled as seeds
    # each against the dense base served the same way: 50 - 60 and 70 - 80
    assert sorted(round(r["delta"], 6) for r in advglue.values() if r["delta"] is not None) == [-10.0, -10.0]
    assert set(side_by_side(result.scores).columns) == {"perspective", *labels}  # four columns, none empty


def test_ci_half_adds_the_shared_item_noise_to_the_seed_spread() -> None:
    scores = pl.DataFrame(
        {
            "run": ["r"] * 3,
            "endpoint": ["a", "b", "c"],
            "perspective": ["ood"] * 3,
            "score": [50.0, 52.0, 54.0],
            "refusal_rate": [0.0] * 3,
            "se": [3.0, 4.0, 5.0],
        }
    )
    checkpoints = pl.DataFrame(
        {"run": ["r"] * 3, "endpoint": ["a", "b", "c"], "checkpoint": ["a", "b", "c"], "calib_seed": [0, 1, 2]}
    ).with_columns(
        base_model=pl.lit("m"),
        base_hash=pl.lit("h"),
        method=pl.lit("gptq"),
        bits=pl.lit(4),
        group_size=pl.lit(128),
        target_sparsity=pl.lit(None, pl.Float64),
        pattern=pl.lit(None, pl.String),
        serving=pl.lit(None, pl.String),
    )
    (row,) = seed_summary(scores, checkpoints).filter(pl.col("perspective") == "ood").iter_rows(named=True)
    item_se2 = (9 + 16 + 25) / 3
    assert row["ci_half"] == pytest.approx(1.959964 * (item_se2 + 2.0**2 / 3) ** 0.5, rel=1e-6)
