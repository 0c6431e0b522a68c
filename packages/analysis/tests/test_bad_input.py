from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
from comptrust_analysis import RECORD_SCHEMA, load_runs, perspective_scores
from comptrust_analysis.cli import main
from comptrust_core import ConfigError, RunDirError, ScoreField

from .study import manifest, record, write_run


def _compact(run: Path) -> Path:
    """Rewrite the run's NDJSON records as one Parquet file, as compaction does."""
    src = run / "records" / "dense.ndjson"
    out = run / "records" / "part-0.parquet"
    pl.read_ndjson(src, schema=RECORD_SCHEMA).write_parquet(out)
    src.unlink()
    return out


def test_compacted_parquet_reads_like_ndjson(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"dense": (manifest("dense"), {"advglue": 0.25})})
    before = perspective_scores(load_runs([run]))
    _compact(run)
    assert perspective_scores(load_runs([run])).equals(before)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_damaged_parquet_is_a_clear_error(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", {"dense": (manifest("dense"), {"advglue": 0.25})})
    path = _compact(run)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not parquet at all" * 10)
    else:
        pl.DataFrame({"x": [1]}).write_parquet(path)
    with pytest.raises(RunDirError, match=r"part-0\.parquet"):
        load_runs([run])
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analyze: error:") and "part-0.parquet" in err and err.count("\n") == 1


def test_runs_scored_under_another_variant_are_refused(tmp_path: Path) -> None:
    fork = write_run(tmp_path / "fork", {"a": (manifest("dense"), {"advglue": 0.5})}, variant="dt-compressed-trust")
    main_run = write_run(tmp_path / "main", {"b": (manifest("dense"), {"advglue": 0.5})}, variant="dt-main")
    with pytest.raises(ConfigError, match=r"run fork.*dt-compressed-trust, not dt-main.*--variant"):
        perspective_scores(load_runs([main_run, fork]), "dt-main")
    with pytest.raises(ConfigError, match=r"run main.*dt-main, not dt-compressed-trust"):
        perspective_scores(load_runs([main_run, fork]), "dt-compressed-trust")
    assert perspective_scores(load_runs([fork]), "dt-compressed-trust")["score"].item() == pytest.approx(50)


def test_partly_rescored_perspective_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = write_run(tmp_path / "run", {"a": (manifest("dense"), {"advglue": 1.0})}, variant="dt-main")
    other = record("a", "advglue", 7, 0.0, variant="dt-compressed-trust")
    with (run / "records" / "a.ndjson").open("a") as fh:
        fh.write(other.model_dump_json() + "\n")
    with caplog.at_level(logging.WARNING):
        scores = perspective_scores(load_runs([run]), "dt-main")
    assert "1 of 5 records carry no dt-main score fields" in caplog.text
    assert scores["score"].item() == pytest.approx(100) and scores["n_scored"].item() == 4


def test_latest_attempt_wins_and_a_tie_goes_to_the_last_written(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a": (manifest("dense"), {"advglue": 1.0})})
    first = record("a", "advglue", 0, 1.0)
    later = first.model_copy(update={"finished_at": "2026-02-01T00:00:00Z", "scores": []})
    earlier = first.model_copy(update={"finished_at": "2025-01-01T00:00:00Z"})
    with (run / "records" / "a.ndjson").open("a") as fh:  # item 0: the later attempt (unscored) must win
        fh.write(later.model_dump_json() + "\n" + earlier.model_dump_json() + "\n")
    tie = record("a", "advglue", 1, 0.0)  # same key and finished_at as the original item 1, written after it
    (run / "records" / "b.ndjson").write_text(tie.model_dump_json() + "\n")
    row = perspective_scores(load_runs([run])).row(0, named=True)
    assert row["n"] == 4 and row["n_scored"] == 3
    assert row["score"] == pytest.approx(100 * 2 / 3)


def test_other_variant_fields_are_not_scorer_variants(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a": (manifest("dense"), {"toxicity": None})})
    rec = record("a", "toxicity", 9, None)
    rec = rec.model_copy(update={"scores": [ScoreField(name="refusal", value=1.0, variant="broad")]})
    with (run / "records" / "a.ndjson").open("a") as fh:
        fh.write(rec.model_dump_json() + "\n")
    assert perspective_scores(load_runs([run]), "dt-main")["n"].item() == 5
