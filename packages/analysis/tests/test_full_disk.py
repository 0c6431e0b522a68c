"""analyze on a full disk: every output is written under a temporary name and renamed, so a write the disk refuses
leaves the previous tables, plots and report as they were (and no temporary file), and the command says so in one
line with exit 4. Injected at the write layer, and on a real full filesystem (root only)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from comptrust_analysis import AnalysisConfig, analyze
from comptrust_analysis.cli import main
from comptrust_core import Manifest

from .study import manifest, write_run


def _runs(tmp_path: Path, value: float) -> Path:
    cps: dict[str, tuple[Manifest | None, dict[str, float | None]]] = {
        "dense": (manifest("dense"), {"advglue": value, "ood": value}),
        "g4": (manifest("gptq", bits=4), {"advglue": value * 0.9, "ood": value * 0.8}),
    }
    return write_run(tmp_path / f"run-{value}", cps)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("nth", [1, 4, 12])
def test_a_refused_write_leaves_the_previous_outputs_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    out = tmp_path / "analysis"
    analyze(AnalysisConfig(run_dirs=(_runs(tmp_path, 0.5),), out=out, plots=True))
    before = _snapshot(out)
    assert {"scores.parquet", "scores.csv", "report.html"} <= set(before)

    real_fsync, calls = os.fsync, [0]

    def fsync_fails_at_the_nth(fd: int) -> None:  # each output file is fsynced once, before its rename
        calls[0] += 1
        if calls[0] >= nth:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    real_parquet = __import__("polars").DataFrame.write_parquet

    def parquet_counts_too(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] >= nth:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync_fails_at_the_nth)
    monkeypatch.setattr("polars.DataFrame.write_parquet", parquet_counts_too)
    with pytest.raises(OSError, match="No space left"):
        analyze(AnalysisConfig(run_dirs=(_runs(tmp_path, 0.3),), out=out, plots=True))
    monkeypatch.undo()
    after = _snapshot(out)
    changed = [name for name in before if after.get(name) != before[name]]
    # what was renamed into place before the failure is the new run's, whole; everything else is the previous one
    assert set(after) == set(before), "a temporary file was left behind, or an output went missing"
    assert len(changed) < nth


@pytest.mark.timeout(120)
def test_on_a_real_full_filesystem(
    tmp_path: Path, small_fs: Callable[[float], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fs = small_fs(4)
    out = fs.path / "analysis"
    runs = _runs(tmp_path, 0.5)
    assert main([str(runs), "--out", str(out)]) == 0
    before = _snapshot(out)
    fs.fill()
    capsys.readouterr()
    assert main([str(_runs(tmp_path, 0.3)), "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert err.count("analyze: error:") == 1 and "No space left on device" in err and "Traceback" not in err
    assert _snapshot(out) == before
