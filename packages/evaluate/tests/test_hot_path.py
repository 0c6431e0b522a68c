"""The engine's per-request shortcuts build exactly what the slow, validated path would: records, their NDJSON lines,
timestamps; and records reach the file within the loop turn after their request finishes."""

from __future__ import annotations

import asyncio
import gc
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comptrust_core import Attribute, GenerationParams, Record, RequestSpec, ScoreField
from comptrust_evaluate.engine import _utc_now, quiet_gc
from comptrust_evaluate.record_builder import trusted_record
from comptrust_evaluate.store import RecordWriter, read_records


def _values(i: int = 0) -> dict[str, Any]:
    return {
        "key": f"k{i}",
        "endpoint": "e",
        "endpoint_url": "http://127.0.0.1:1",
        "task": "custom",
        "perspective": "custom",
        "item_id": str(i),
        "request": RequestSpec(prompt="q \u2019 é", params=GenerationParams(seed=3, stop=("\n",))),
        "protocol": "tgi",
        "template": "none",
        "status": "ok",
        "text": "an answer",
        "latency_s": 0.25,
        "attempts": 1,
        "finished_at": "2026-01-01T00:00:00.000001Z",
        "refusal": False,
        "refusal_detector": "broad",
        "scores": [ScoreField(name="refusal", value=0.0, variant="broad")],
        "attributes": [Attribute(name="group", value="a")],
    }


def test_trusted_record_is_what_model_construct_and_validation_build() -> None:
    fast, slow = trusted_record(**_values()), Record.model_construct(**_values())
    assert fast == slow and fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    assert list(fast.__dict__) == list(slow.__dict__) == list(Record.model_fields)
    assert Record.model_validate_json(fast.model_dump_json()) == fast  # and it is a valid record
    assert fast.schema_version == Record.model_fields["schema_version"].default and fast.sample_index == 0


def test_utc_now_is_an_iso_timestamp_of_now() -> None:
    before = datetime.now(UTC)
    stamp = _utc_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) <= after


def test_writer_lines_are_model_dump_json(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    records = [trusted_record(**_values(i)) for i in range(3)]
    with RecordWriter(path) as writer:
        writer.write(records[0])  # outside an event loop: written at once
        assert path.read_text() == records[0].model_dump_json() + "\n"
        writer.write(records[1])
        writer.write(records[2])
    assert path.read_text().splitlines() == [r.model_dump_json() for r in records]
    assert read_records(path) == records


def test_in_a_loop_records_reach_the_file_in_the_next_turn(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"

    async def run() -> None:
        writer = RecordWriter(path)
        for i in range(5):  # finished in one turn of the loop: one write at the start of the next
            writer.write(trusted_record(**_values(i)))
        assert path.read_text() == ""
        await asyncio.sleep(0)
        assert len(path.read_text().splitlines()) == 5
        writer.write(trusted_record(**_values(5)))
        writer.close()  # closing writes what is pending
        assert len(path.read_text().splitlines()) == 6
        await asyncio.sleep(0)  # the turn's scheduled write finds nothing more to do on the closed file

    asyncio.run(run())
    assert [r.key for r in read_records(path)] == [f"k{i}" for i in range(6)]


def test_quiet_gc_tunes_the_collector_for_the_run_and_restores_it() -> None:
    before = gc.get_threshold()
    with quiet_gc(12_345):
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > 0
        with quiet_gc(99):  # nested: the outer run's settings stay
            assert gc.get_threshold()[0] == 12_345
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
