from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest
from comptrust_analysis import RECORD_SCHEMA, AnalysisConfig, analyze, load_runs, perspective_scores, side_by_side
from comptrust_analysis.cli import main
from comptrust_core import Record, RunDirError, SchemaVersionError

from .conftest import RunFactory


def test_polars_schema_mirrors_the_record_contract() -> None:
    assert list(RECORD_SCHEMA) == list(Record.model_fields)


def _brute_force(records: list[Record]) -> dict[tuple[str, str], tuple[float | None, float | None, int, int]]:
    out: dict[tuple[str, str], tuple[float | None, float | None, int, int]] = {}
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.endpoint, r.perspective), []).append(r)
    for k, rs in groups.items():
        ok = [r for r in rs if r.status == "ok"]
        vals = [s.value for r in ok for s in r.scores if s.name == "score" and s.value is not None]
        refs = [r.refusal for r in ok if r.refusal is not None]
        score = 100 * sum(vals) / len(vals) if vals else None
        refusal = 100 * sum(refs) / len(refs) if refs else None
        out[k] = (score, refusal, len(ok), len(rs) - len(ok))
    return out


def test_scores_match_brute_force(make_run: RunFactory) -> None:
    run_dir, records = make_run(endpoints=("dense", "mag"))
    scores = perspective_scores(load_runs([run_dir]))
    expected = _brute_force(records)
    assert scores.height == len(expected)
    for row in scores.iter_rows(named=True):
        score, refusal, n, errors = expected[(row["endpoint"], row["perspective"])]
        assert row["n"] == n and row["errors"] == errors
        assert row["score"] == pytest.approx(score) if score is not None else row["score"] is None
        assert row["refusal_rate"] == pytest.approx(refusal)
        assert row["method"] == ("dense" if row["endpoint"] == "dense" else "magnitude")
    tox = scores.filter(pl.col("perspective") == "toxicity")
    assert tox["score"].is_null().all() and tox["n_scored"].sum() == 0


def test_latest_record_per_key_wins(make_run: RunFactory) -> None:
    run_dir, records = make_run()
    first = next(r for r in records if r.perspective == "advglue")
    retried = first.model_copy(
        update={
            "status": "ok",
            "error": None,
            "refusal": False,
            "finished_at": "2026-01-02T00:00:00Z",
            "scores": [*first.scores],
        }
    )
    with (run_dir / "records" / "dense.ndjson").open("a") as fh:
        fh.write(retried.model_dump_json() + "\n")
    scores = perspective_scores(load_runs([run_dir]))
    n_total = scores.filter(pl.col("perspective") == "advglue").select(pl.col("n") + pl.col("errors")).item()
    assert n_total == 12


def test_torn_last_line_is_skipped_with_warning(make_run: RunFactory, caplog: pytest.LogCaptureFixture) -> None:
    run_dir, records = make_run()
    path = run_dir / "records" / "dense.ndjson"
    with path.open("a") as fh:
        fh.write(records[0].model_dump_json()[:40])
    with caplog.at_level(logging.WARNING):
        scores = perspective_scores(load_runs([run_dir]))
    assert "torn last line" in caplog.text
    assert int(scores.select((pl.col("n") + pl.col("errors")).sum()).item()) == len(records)


def test_newer_record_schema_is_refused(make_run: RunFactory) -> None:
    run_dir, records = make_run()
    data = json.loads(records[0].model_dump_json())
    data["schema_version"] = 7
    with (run_dir / "records" / "dense.ndjson").open("a") as fh:
        fh.write(json.dumps(data) + "\n")
    with pytest.raises(SchemaVersionError, match="upgrade"):
        load_runs([run_dir])


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"run\.json"):
        load_runs([tmp_path])


def test_side_by_side_has_one_column_per_checkpoint(make_run: RunFactory) -> None:
    run_dir, _ = make_run(endpoints=("dense", "mag"))
    wide = side_by_side(perspective_scores(load_runs([run_dir])))
    assert wide.columns == ["perspective", "dense", "mag"]
    assert wide.filter(pl.col("perspective") == "toxicity")["dense"][0].startswith("n/a (")


def test_analyze_writes_parquet_and_markdown(make_run: RunFactory, tmp_path: Path) -> None:
    run_dir, _ = make_run()
    result = analyze(AnalysisConfig(run_dirs=(run_dir,)))
    assert result.out_dir == run_dir / "analysis"
    back = pl.read_parquet(result.out_dir / "scores.parquet")
    assert back.equals(result.scores)
    md = (result.out_dir / "scores.md").read_text()
    assert (
        "| perspective | score | ci_low | ci_high | refusal_rate | alt_score | alt_refusal_rate | n | clusters "
        "| errors |" in md
    )


def test_cli_prints_table_and_errors(make_run: RunFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = make_run()
    assert main([str(run_dir), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "machine_ethics" in out and "refusal_rate" in out
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analyze: error:") and err.count("\n") == 1


def test_the_papers_variant_is_the_default_with_main_beside_it_and_a_flag_flips_them(
    make_run: RunFactory, tmp_path: Path
) -> None:
    from comptrust_analysis.cli import main

    run_dir, _ = make_run()
    result = analyze(AnalysisConfig(run_dirs=(run_dir,), out=tmp_path / "a", plots=False))
    assert set(result.scores["variant"]) == {"dt-compressed-trust"} and set(result.scores["alt_variant"]) == {"dt-main"}
    assert result.scores["alt_score"].null_count() < result.scores.height
    page = (result.out_dir / "report.html").read_text()
    assert "Scorer variant <code>dt-compressed-trust</code>" in page and "<code>dt-main</code>" in page
    assert "refusal-driven variance" in page and "refusal-driven variance" in (result.out_dir / "scores.md").read_text()
    assert main([str(run_dir), "--out", str(tmp_path / "b"), "--no-plots", "--variant", "dt-main"]) == 0
    flipped = pl.read_parquet(tmp_path / "b" / "scores.parquet")
    assert set(flipped["variant"]) == {"dt-main"} and set(flipped["alt_variant"]) == {"dt-compressed-trust"}
    both = result.scores.join(flipped, on=["run", "endpoint", "perspective"], suffix="_f")
    assert both["score"].to_list() == both["alt_score_f"].to_list()  # the same numbers, the other way round
