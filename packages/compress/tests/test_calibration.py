"""Calibration sources and the seeded draw; the hub paths run against monkeypatched fakes (no downloads)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from comptrust_compress import calibration, project_text
from comptrust_compress.calibration import HubSource, check_calibration_source, draw_calibration
from comptrust_core import ConfigError


def test_the_seed_alone_decides_the_set(tokenizer: Any) -> None:
    sets = [draw_calibration(tokenizer, source="shipped", samples=8, seqlen=32, seed=seed) for seed in (0, 1, 2)]
    again = [draw_calibration(tokenizer, source="shipped", samples=8, seqlen=32, seed=seed) for seed in (0, 1, 2)]
    assert [s.windows for s in sets] == [s.windows for s in again]
    assert len({s.content_hash for s in sets}) == 3
    for drawn in sets:
        assert len(drawn.windows) == 8 and all(len(w) == 32 for w in drawn.windows)
        spec = drawn.spec()
        assert (spec.samples, spec.seqlen) == (8, 32)
        assert spec.source.startswith("shipped comptrust:calibration.txt (sha256:")
        assert spec.content_hash == drawn.content_hash and spec.content_hash.startswith("sha256:")
    assert [s.seed for s in sets] == [0, 1, 2]


def test_windows_come_from_the_text(tokenizer: Any) -> None:
    drawn = draw_calibration(tokenizer, source="shipped", samples=4, seqlen=16, seed=5)
    text = project_text("calibration")
    for window in drawn.windows:
        decoded = tokenizer.decode([i for i in window if i != tokenizer.eos_token_id])
        assert decoded.split()[1] in text


def test_too_little_text(tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match=r"too little for 4 samples of 100000 tokens \(at least 100003 needed\)"):
        draw_calibration(tokenizer, source="shipped", samples=4, seqlen=100_000, seed=0)


def test_local_text_and_jsonl(tokenizer: Any, tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("\n\n".join(f"Paragraph {i} talks about rivers, bread and clocks." for i in range(40)))
    drawn = draw_calibration(tokenizer, source=str(txt), samples=4, seqlen=16, seed=0)
    assert drawn.source == "file:notes.txt" and len(drawn.windows) == 4

    rows = tmp_path / "rows.jsonl"
    lines: list[dict[str, Any]] = [{"text": f"Plain row {i} about the weather."} for i in range(20)]
    lines += [{"instruction": f"Name a colour {i}.", "input": "", "output": "Blue."} for i in range(20)]
    lines += [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}]
    rows.write_text("\n".join(json.dumps(row) for row in lines) + "\n\n")
    docs, label = calibration.load_documents(str(rows), tokenizer)
    assert label == "file:rows.jsonl" and len(docs) == 41
    assert docs[20] == "<|im_start|>user\nName a colour 0.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"oops": 1}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl, line 2: a row has neither 'text', 'messages' nor"):
        calibration.load_documents(str(bad), tokenizer)
    bad.write_text("not json\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl, line 1: not JSON"):
        calibration.load_documents(str(bad), tokenizer)


def test_source_checks(tmp_path: Path) -> None:
    for ok in ("shipped", "c4", "alpaca"):
        check_calibration_source(ok)
    with pytest.raises(ConfigError, match=r"'wikitext' is not a known source; pass shipped, c4, alpaca"):
        check_calibration_source("wikitext")
    with pytest.raises(ConfigError, match="no such file"):
        check_calibration_source(str(tmp_path / "missing.jsonl"))


def test_c4_through_the_hub(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[HubSource] = []

    def fake_rows(source: HubSource) -> list[dict[str, Any]]:
        asked.append(source)
        return [{"text": f"Document {i} describes a garden, a kettle and a bicycle.", "url": "u"} for i in range(50)]

    monkeypatch.setattr(calibration, "_hub_rows", fake_rows)
    first = draw_calibration(tokenizer, source="c4", samples=6, seqlen=24, seed=0)
    second = draw_calibration(tokenizer, source="c4", samples=6, seqlen=24, seed=1)
    assert asked[0].repo == "allenai/c4" and asked[0].data_files == "en/c4-train.00000-of-01024.json.gz"
    assert first.source == "hub:allenai/c4/en/c4-train.00000-of-01024.json.gz"
    assert first.content_hash != second.content_hash
    # enough text for samples x seqlen: consecutive windows, no overlap
    stream = [t for w in first.windows for t in w]
    assert len(stream) == 6 * 24


def test_alpaca_uses_the_chat_template(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"instruction": "Give a tip.", "input": "About tea.", "output": "Warm the pot first."},
        {"instruction": "Count to three.", "input": "", "output": "One, two, three."},
    ]
    monkeypatch.setattr(calibration, "_hub_rows", lambda source: rows)
    docs, label = calibration.load_documents("alpaca", tokenizer)
    assert label == "hub:tatsu-lab/alpaca"
    assert docs[0] == (
        "<|im_start|>user\nGive a tip.\n\nAbout tea.<|im_end|>\n<|im_start|>assistant\nWarm the pot first.<|im_end|>\n"
    )
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(ConfigError, match="has no chat template"):
        calibration.load_documents("alpaca", plain)


def test_hub_failure_is_a_clear_error(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(source: HubSource) -> list[dict[str, Any]]:
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(calibration, "_hub_rows", offline)
    with pytest.raises(ConfigError, match=r"cannot fetch --calib-data c4 \(allenai/c4\) .*network unreachable; check"):
        draw_calibration(tokenizer, source="c4", samples=2, seqlen=8, seed=0)
