from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from comptrust_analysis import AnalysisConfig, analyze

from .study import manifest, record, write_run


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.in_details = 0
        self.details_text = ""
        self.open_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.in_details += tag == "details"
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_endtag(self, tag: str) -> None:
        self.in_details -= tag == "details"

    def handle_data(self, data: str) -> None:
        if self.in_details:
            self.details_text += data
        else:
            self.open_text += data


def test_report_is_self_contained(tmp_path: Path) -> None:
    values = {"toxicity": None, "advglue": 0.5, "ood": 0.6, "privacy": 0.7}
    run = write_run(
        tmp_path / "run",
        {
            "dense": (manifest("dense"), values),
            "w": (manifest("wanda", pattern="2:4", seed=0), {p: v and v * 0.8 for p, v in values.items()}),
        },
    )
    nasty = record("w", "ood", 9, 0.0, text="<script>alert(1)</script> ok")
    with (run / "records" / "w.ndjson").open("a") as fh:
        fh.write(nasty.model_dump_json() + "\n")
    result = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / "out"))
    page = (tmp_path / "out" / "report.html").read_text()
    assert result.out_dir / "report.html" in result.files
    parsed = _Page()
    parsed.feed(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "img" not in parsed.tags
    assert parsed.urls == [] and not re.search(r"url\((?!#)|@import|(?:href|src)=[\"'](?!#)", page)  # nothing to fetch
    assert parsed.tags.count("svg") >= 3  # sparsity plot and two radars, inline
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "toxicity prompt" in parsed.details_text and "toxicity prompt" not in parsed.open_text
    assert "advglue prompt 1" in parsed.open_text  # answered, not toxic: shown
    assert "advglue prompt 0" in parsed.details_text  # refused (item 0): folded
    assert "Across calibration seeds" in parsed.open_text and "Refusal rates" in parsed.open_text


def test_report_without_plots(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"dense": (manifest("dense"), {"advglue": 0.5})})
    result = analyze(AnalysisConfig(run_dirs=(run,), out=tmp_path / "out", plots=False))
    assert not (tmp_path / "out" / "plots").exists()
    assert "No plots" in (result.out_dir / "report.html").read_text()
