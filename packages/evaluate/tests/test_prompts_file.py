"""The --prompts validator: every problem is one line naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_evaluate import load_prompts_file


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_valid_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '{"id": "a", "prompt": "Once upon a time", "max_new_tokens": 8, "stop": "\\n", "n": 2}',
        "",
        '{"id": 7, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7, "top_p": 0.9, "seed": 3}',
    )
    a, b = load_prompts_file(path)
    assert a.item_id == "a" and a.n == 2 and a.request.prompt == "Once upon a time"
    assert a.request.params.stop == ("\n",) and a.request.params.max_new_tokens == 8
    assert b.item_id == "7" and b.line == 3 and b.request.params.seed == 3 and b.request.messages is not None


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"id": "a", "prompt": "x"}', "{not json"], r"line 2: invalid JSON"),
        (['{"prompt": "x"}'], r"line 1: missing or empty 'id'"),
        (['{"id": "", "prompt": "x"}'], r"line 1: missing or empty 'id'"),
        (['{"id": "a", "prompt": "x"}', '{"id": "a", "prompt": "y"}'], r"line 2: duplicate id 'a' \(first on line 1\)"),
        (['{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}'], r"line 1: needs exactly one"),
        (['{"id": "a"}'], r"line 1: needs exactly one"),
        (['{"id": "a", "prompt": "x", "temprature": 1}'], r"line 1: unknown key 'temprature'"),
        (['{"id": "a", "prompt": "x", "max_new_tokens": 0}'], r"line 1: bad max_new_tokens"),
        (['{"id": "a", "prompt": "x", "n": 0}'], r"line 1: 'n' must be a positive integer"),
        (['{"id": "a", "messages": [{"role": "robot", "content": "y"}]}'], r"line 1: messages\[0\]"),
        (['["a"]'], r"line 1: expected a JSON object"),
    ],
)
def test_invalid_files(tmp_path: Path, lines: list[str], match: str) -> None:
    path = _write(tmp_path, *lines)
    with pytest.raises(ConfigError, match=match) as err:
        load_prompts_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_prompts_file(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts_file(_write(tmp_path, ""))
