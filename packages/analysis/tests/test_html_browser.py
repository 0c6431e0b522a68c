"""report.html in a real browser: headless Chromium loads it with no console errors, tables and plots present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from comptrust_analysis import AnalysisConfig, analyze

from .browser import chromium_binary, load_page
from .study import manifest, write_run

_FACTS = """JSON.stringify({
  title: document.title,
  tables: document.querySelectorAll('table').length,
  rows: document.querySelectorAll('table tbody tr').length,
  svgs: [...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 50).length,
  details: document.querySelectorAll('details').length,
  openDetails: [...document.querySelectorAll('details')].filter(d => d.open).length,
  scripts: document.scripts.length,
  height: document.body.scrollHeight,
})"""


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium installed (.ci/run installs Debian's chromium)")
def test_report_loads_in_headless_chromium(tmp_path: Path) -> None:
    values = {"toxicity": None, "advglue": 0.5, "ood": 0.6, "privacy": 0.7, "machine_ethics": 0.4}
    run = write_run(
        tmp_path / "run",
        {
            "dense": (manifest("dense"), values),
            "w0": (manifest("wanda", pattern="2:4", seed=0), {p: v and v * 0.8 for p, v in values.items()}),
            "w1": (manifest("wanda", pattern="2:4", seed=1), {p: v and v * 0.7 for p, v in values.items()}),
        },
    )
    result = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / "out"))
    page = result.out_dir / "report.html"

    report = load_page(page, _FACTS)

    shot = tmp_path / "report.png"
    shot.write_bytes(report.screenshot)
    artifacts = os.environ.get("COMPTRUST_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "analysis-report.png")
    assert report.console_errors == []
    assert report.screenshot.startswith(b"\x89PNG\r\n\x1a\n") and len(report.screenshot) > 10_000
    facts = report.facts
    assert facts["scripts"] == 0
    assert facts["tables"] >= 3 and facts["rows"] >= 10
    assert facts["svgs"] >= 3  # the sparsity plot and the radars, rendered at a visible size
    assert facts["details"] >= 1 and facts["openDetails"] == 0  # toxic and refused samples stay folded
    assert facts["height"] > 1000
