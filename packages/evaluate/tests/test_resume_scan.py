"""A resume reads only what it needs of a records file (a key and a status per line): the same keys as validating
every record, duplicates and torn lines rewritten away, error records dropped on --retry-errors, a damaged line
named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from comptrust_core import RunDirError, record_key
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate, read_records
from comptrust_evaluate.api import SUMMARY_FILE, _Pending
from comptrust_evaluate.plan import Plan, Scenario, Suite, build_plan
from comptrust_evaluate.store import Finished, records_path
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
    done = load_for_resume(records, drop_errors=False)
    assert done.keys == {r.key for r in full}
    assert done.units == {(r.task, r.item_id, r.sample_index): r.key for r in full}
    before = records.read_bytes()
    assert load_for_resume(records, drop_errors=False) and records.read_bytes() == before  # nothing to rewrite


def test_retry_errors_drops_exactly_the_error_records(records: Path) -> None:
    full = read_records(records)
    done = load_for_resume(records, drop_errors=True)
    keep = done.keys
    assert keep == {r.key for r in full if r.status == "ok"} and len(keep) == 27
    assert set(done.units.values()) == keep
    assert {r.key for r in read_records(records)} == keep  # rewritten without them


def test_a_key_written_twice_keeps_its_last_line_and_a_torn_line_goes(records: Path) -> None:
    lines = records.read_text().splitlines()
    first = json.loads(lines[0])
    again = {**first, "attempts": 7}
    records.write_text("\n".join([*lines, json.dumps(again, separators=(",", ":")), lines[5][:40]]))
    assert load_for_resume(records, drop_errors=False).keys == {json.loads(x)["key"] for x in lines}
    after = records.read_text().splitlines()
    assert len(after) == 30 and json.loads(after[-1]) == again
    assert [r.attempts for r in read_records(records) if r.key == first["key"]] == [7]


def test_a_damaged_line_in_the_middle_is_named(records: Path) -> None:
    lines = records.read_text().splitlines()
    lines[11] = lines[11][:-30]  # cut short, not at the end of the file
    records.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=r"line 12: damaged record"):
        load_for_resume(records, drop_errors=False)


def _two_files_suite(tmp_path: Path, ids_b: range) -> Plan:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "prompt": f"a{i}"}) + "\n" for i in range(4)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"id": i, "prompt": f"b{i}"}) + "\n" for i in ids_b))
    scenarios = tuple(Scenario(task="custom", options={"name": n, "file": f"{n}.jsonl"}) for n in ("a", "b"))
    return build_plan(Suite(name="two", description="", data_root=tmp_path, scenarios=scenarios))


@pytest.mark.parametrize("ids_b", [range(4), range(10, 14)], ids=["shared ids", "own ids"])
def test_a_resume_passes_over_finished_units_and_only_those(tmp_path: Path, ids_b: range) -> None:
    plan = _two_files_suite(tmp_path, ids_b)
    assert plan.unique_ids == (ids_b.start == 10)  # two custom files sharing ids: the shortcut is off
    keyed = [(u, record_key("ep", u.task.name, u.item.item_id, u.sample_index, u.request)) for u in plan.units]
    finished = [(u, k) for u, k in keyed if u.request.prompt in ("a0", "a2", "b1")]
    done = Finished({k for _, k in finished}, {(u.task.name, u.item.item_id, u.sample_index): k for u, k in finished})
    left = [k for _, k in _Pending(plan, "ep", done, len(keyed) - len(finished))]
    assert left == [k for u, k in keyed if u.request.prompt not in ("a0", "a2", "b1")]


def test_the_scan_reads_item_ids_that_need_escaping(records: Path) -> None:
    lines = records.read_text().splitlines()
    odd = ['a"b', "c\\d", "é/ü ☃", 'x","sample_index":9,"request":{']
    edited = []
    for line, item_id in zip(lines, odd, strict=False):
        record = json.loads(line)
        record["item_id"] = item_id
        edited.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    records.write_text("\n".join(edited) + "\n")
    done = load_for_resume(records, drop_errors=False)
    assert sorted(done.units) == sorted(("custom", i, 0) for i in odd)


def test_a_rerun_takes_the_plan_summary_from_the_run_dir_only_while_the_prompts_are_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(6)))
    out = tmp_path / "run"
    with FakeEndpoint() as fake:
        config = EvaluateConfig(
            out=out, endpoints=(EndpointSpec(url=fake.url, name="fake", protocol="tgi"),), prompts=prompts
        )
        first = evaluate(config)
        stored = json.loads((out / SUMMARY_FILE).read_text())
        assert stored["total"] == 6 and stored["unique_ids"] is True
        caplog.set_level(logging.INFO, logger="comptrust_evaluate.api")
        again = evaluate(config)
        assert "plan summary read from" in caplog.text
        assert again.endpoints[0].total == 6 and again.endpoints[0].resumed == 6 and first.run_id == again.run_id
        caplog.clear()
        prompts.write_text(prompts.read_text() + json.dumps({"id": 6, "prompt": "q6"}) + "\n")
        with pytest.raises(RunDirError, match="holds a different run"):
            evaluate(config)
        assert "plan summary read from" not in caplog.text
