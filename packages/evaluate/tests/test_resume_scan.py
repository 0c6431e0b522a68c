"""A resume reads only what it needs of a records file (a key and a status per line): the same keys as validating
every record, duplicates and torn lines rewritten away, error records dropped on --retry-errors, a damaged line
named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from comptrust_core import RunDirError
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate, read_records
from comptrust_evaluate.store import records_path
from comptrust_evaluate.store.ndjson import load_for_resume
from comptrust_evaluate.testing import FakeEndpoint, Fault


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A real run's records file: 30 answers, 3 of them error records, and answers whose text holds the very
    characters the scan looks for."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(30)))

    def tricky(prompt: str) -> str:
        return '"status":"error", "key":"x"} and {"schema_version":1,"key":"y"'

    with FakeEndpoint(answer=tricky) as fake:
        bad = ('"q2"', '"q12"', '"q22"')
        fake.fault_for = lambda body: Fault(status=400) if any(b in json.dumps(body) for b in bad) else None
        config = EvaluateConfig(
            out=tmp_path / "run", endpoints=(EndpointSpec(url=fake.url, name="e"),), prompts=prompts, progress="off"
        )
        evaluate(config)
    return records_path(tmp_path / "run", "e")


def test_the_scan_finds_what_validating_every_record_finds(records: Path) -> None:
    full = read_records(records)
    assert len(full) == 30 and sum(r.status == "error" for r in full) == 3  # q2, q12 and q22: 400s
    assert all('"status":"error"' in (r.text or "") for r in full if r.status == "ok")  # in the text: not an error
    assert load_for_resume(records, drop_errors=False) == {r.key for r in full}
    before = records.read_bytes()
    assert load_for_resume(records, drop_errors=False) and records.read_bytes() == before  # nothing to rewrite


def test_retry_errors_drops_exactly_the_error_records(records: Path) -> None:
    full = read_records(records)
    keep = load_for_resume(records, drop_errors=True)
    assert keep == {r.key for r in full if r.status == "ok"} and len(keep) == 27
    assert {r.key for r in read_records(records)} == keep  # rewritten without them


def test_a_key_written_twice_keeps_its_last_line_and_a_torn_line_goes(records: Path) -> None:
    lines = records.read_text().splitlines()
    first = json.loads(lines[0])
    again = {**first, "attempts": 7}
    records.write_text("\n".join([*lines, json.dumps(again, separators=(",", ":")), lines[5][:40]]))
    assert load_for_resume(records, drop_errors=False) == {json.loads(x)["key"] for x in lines}
    after = records.read_text().splitlines()
    assert len(after) == 30 and json.loads(after[-1]) == again
    assert [r.attempts for r in read_records(records) if r.key == first["key"]] == [7]


def test_a_damaged_line_in_the_middle_is_named(records: Path) -> None:
    lines = records.read_text().splitlines()
    lines[11] = lines[11][:-30]  # cut short, not at the end of the file
    records.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=r"line 12: damaged record"):
        load_for_resume(records, drop_errors=False)
