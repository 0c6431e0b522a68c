"""Compaction to Parquet: at the end of a run (``compact=True``) or on demand; resume skips keys that are only in
Parquet, ``--retry-errors`` redoes compacted error records, and a crash between the two steps loses nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import RECORDS_DIR
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, compact_run, evaluate, read_records
from comptrust_evaluate.cli import main
from comptrust_evaluate.store import parquet_path, records_path
from comptrust_evaluate.store.parquet import read_parquet_records, write_parquet_records
from comptrust_evaluate.testing import FakeEndpoint, Fault

pytest.importorskip("polars")

FAST = RetryPolicy(max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.01)


def _config(tmp_path: Path, url: str, n: int = 30, **kw: Any) -> EvaluateConfig:
    prompts = tmp_path / "p.jsonl"
    if not prompts.exists():
        rows = [{"id": i, "prompt": f"q{i}"} for i in range(n)]
        rows += [{"id": "chat", "messages": [{"role": "user", "content": "hi"}], "stop": ["\n"], "logprobs": True}]
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return EvaluateConfig(
        out=tmp_path / "run",
        endpoints=(EndpointSpec(url=url, name="fake"),),
        prompts=prompts,
        retry=FAST,
        progress="off",
        **kw,
    )


def test_compact_at_the_end_then_resume_skips_everything(fake: FakeEndpoint, tmp_path: Path) -> None:
    evaluate(_config(tmp_path, fake.url, compact=True))
    run = tmp_path / "run"
    assert not records_path(run, "fake").exists()
    compacted = read_parquet_records(parquet_path(run, "fake"))
    assert len(compacted) == 31 and all(r.status == "ok" for r in compacted.values())
    chat = next(r for r in compacted.values() if r.item_id == "chat")
    assert chat.request.params.stop == ("\n",) and chat.request.messages is not None
    sent = len(fake.posts())
    summary = evaluate(_config(tmp_path, fake.url))
    assert summary.endpoints[0].resumed == 31 and len(fake.posts()) == sent


def test_records_round_trip_through_parquet(fake: FakeEndpoint, tmp_path: Path) -> None:
    evaluate(_config(tmp_path, fake.url))
    before = {r.key: r for r in read_records(records_path(tmp_path / "run", "fake"))}
    (result,) = compact_run(tmp_path / "run")
    assert result.folded == result.total == 31
    assert read_parquet_records(parquet_path(tmp_path / "run", "fake")) == before


def test_resume_after_compaction_runs_only_the_rest(fake: FakeEndpoint, tmp_path: Path) -> None:
    evaluate(_config(tmp_path, fake.url, limit=10))
    # a different plan would be refused: compact, then fake a partial run by dropping some compacted rows
    run = tmp_path / "run"
    compact_run(run)
    kept = list(read_parquet_records(parquet_path(run, "fake")).values())[:6]
    write_parquet_records(parquet_path(run, "fake"), kept)
    sent = len(fake.posts())
    summary = evaluate(_config(tmp_path, fake.url, limit=10))
    assert summary.endpoints[0].resumed == 6 and len(fake.posts()) - sent == 4
    compact_run(run)
    assert len(read_parquet_records(parquet_path(run, "fake"))) == 10


def test_retry_errors_redoes_compacted_errors(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.fault_for = lambda body: Fault(status=400) if body.get("inputs") in ("q3", "q4") else None
    summary = evaluate(_config(tmp_path, fake.url, compact=True))
    assert summary.endpoints[0].errors == 2
    fake.fault_for = None
    sent = len(fake.posts())
    summary = evaluate(_config(tmp_path, fake.url, retry_errors=True, compact=True))
    assert summary.endpoints[0].ok == 2 and len(fake.posts()) - sent == 2
    records = read_parquet_records(parquet_path(tmp_path / "run", "fake"))
    assert len(records) == 31 and all(r.status == "ok" for r in records.values())


def test_a_crash_between_parquet_and_ndjson_removal_loses_nothing(fake: FakeEndpoint, tmp_path: Path) -> None:
    evaluate(_config(tmp_path, fake.url))
    run = tmp_path / "run"
    lines = records_path(run, "fake").read_text()
    compact_run(run)
    records_path(run, "fake").write_text(lines)  # as if the NDJSON removal never happened
    sent = len(fake.posts())
    summary = evaluate(_config(tmp_path, fake.url))
    assert summary.endpoints[0].resumed == 31 and len(fake.posts()) == sent
    (result,) = compact_run(run)
    assert result.total == 31 and not records_path(run, "fake").exists()


def test_compact_command(fake: FakeEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(_config(tmp_path, fake.url))
    assert main(["compact", str(tmp_path / "run")]) == 0
    assert "31 records folded in" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "run" / RECORDS_DIR).iterdir()] == ["fake.parquet"]
    assert main(["compact", str(tmp_path / "nowhere")]) != 0
