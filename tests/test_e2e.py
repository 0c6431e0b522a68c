"""End to end through the real embedded server with SmolLM2: compress → serve → evaluate → analyze, via `sweep`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from comptrust_core import read_manifest, read_run_info

from comptrust.sweep.cli import main

PLAN = """
[study]
name = "e2e"
out = "{out}"

[[models]]
name = "smol"
source = "smollm2-135m-instruct"

[[methods]]
name = "dense"

[[methods]]
name = "magnitude"
pattern = "2:4"

[[methods]]
name = "no-such-method"

[serve]
launcher = "embedded"
dtype = "auto"

[evaluate]
suite = "quick"
max_concurrency = 8
limit = 1
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_end_to_end_with_smollm2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path on the real model, and one failing checkpoint (an unknown method) in the same grid, which
    does not stop the others (one sweep proves both: each costs a SmolLM2 serve and evaluate)."""
    out = tmp_path / "study"
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(out=out.as_posix()))

    assert main([str(plan)]) == 1
    captured = capsys.readouterr()
    printed = captured.out
    assert "side by side" in printed and "smol-dense" in printed and "smol-magnitude-2of4" in printed
    assert "1 checkpoint(s) failed: smol-no-such-method" in captured.err
    assert not (out / "checkpoints" / "smol-no-such-method").exists()

    assert main(["status", str(plan)]) == 0
    status = capsys.readouterr().out
    assert "smol-dense" in status and "evaluated" in status
    assert "smol-no-such-method" in status and "failed (compress: " in status

    dense, pruned = (
        read_manifest(out / "checkpoints" / "smol-dense"),
        read_manifest(out / "checkpoints" / "smol-magnitude-2of4"),
    )
    assert dense.measured.sparsity < 0.01 and pruned.measured.sparsity == pytest.approx(0.5, abs=1e-3)
    assert pruned.measured.nm_pattern_holds is True
    assert pruned.measured.perplexity_after > dense.measured.perplexity_after  # type: ignore[operator]

    run = out / "runs" / "smol-magnitude-2of4"
    info = read_run_info(run)
    assert info.endpoints[0].manifest is not None and info.endpoints[0].manifest.method.pattern == "2:4"
    lines = (run / "records" / "smol-magnitude-2of4.ndjson").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert len({r["key"] for r in records}) == len(records) > 8
    perspectives = {r["perspective"] for r in records}
    assert {
        "toxicity",
        "stereotype",
        "advglue",
        "ood",
        "adv_demonstration",
        "privacy",
        "machine_ethics",
        "fairness",
    } <= perspectives
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) >= len(records) - 1 and all(isinstance(r["text"], str) for r in ok)
    for field in (
        "key",
        "endpoint",
        "task",
        "item_id",
        "sample_index",
        "status",
        "text",
        "refusal",
        "latency_s",
        "attempts",
    ):
        assert field in records[0]

    scores = pl.read_parquet(out / "analysis" / "scores.parquet")
    assert set(scores["checkpoint"]) == {"smol-dense", "smol-magnitude-2of4"}
    assert scores.height == 16

    # rerunning resumes: every stage is found done and nothing is duplicated (the unknown method fails again)
    assert main([str(plan)]) == 1
    assert (run / "records" / "smol-magnitude-2of4.ndjson").read_text().splitlines() == lines
