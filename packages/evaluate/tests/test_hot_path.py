"""The engine's per-request shortcuts build exactly what the slow, validated path would: records, their NDJSON lines,
timestamps; and records reach the file within the loop turn after their request finishes."""

from __future__ import annotations

import asyncio
import gc
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
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


def _prompt_run(tmp_path: Path, url: str, n: int) -> Any:
    from comptrust_evaluate import EndpointSpec, EvaluateConfig

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": {i}, "prompt": "q{i}"}}\n' for i in range(n)))
    return EvaluateConfig(
        out=tmp_path / "run",
        endpoints=(EndpointSpec(url=url, name="fake"),),
        prompts=prompts,
        max_concurrency=1,
        progress="off",
    )


def test_a_worker_sends_its_next_request_before_the_last_record_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_evaluate import engine, evaluate, record_builder
    from comptrust_evaluate.testing import FakeEndpoint

    events: list[str] = []
    attempt, build = engine._attempt, record_builder.build_record

    async def traced_attempt(session: Any, client: Any, unit: Any, *args: Any) -> Any:
        events.append(f"send {unit.item.item_id}")
        return await attempt(session, client, unit, *args)

    def traced_build(**kw: Any) -> Record:
        events.append(f"build {kw['unit'].item.item_id}")
        return build(**kw)

    monkeypatch.setattr(engine, "_attempt", traced_attempt)
    monkeypatch.setattr(engine, "build_record", traced_build)
    with FakeEndpoint() as fake:
        (ep,) = evaluate(_prompt_run(tmp_path, fake.url, 3)).endpoints
    assert ep.ok == 3
    # one worker: request 1 goes out before record 0 is built, and so on; the last record is still built
    assert events == ["send 0", "send 1", "build 0", "send 2", "build 1", "build 2"]
    assert len(read_records(tmp_path / "run" / "records" / "fake.ndjson")) == 3


def test_a_record_that_cannot_be_built_fails_the_run_and_the_others_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_evaluate import engine, evaluate, record_builder
    from comptrust_evaluate.testing import FakeEndpoint

    build = record_builder.build_record

    def flaky(**kw: Any) -> Record:
        if kw["unit"].item.item_id == "1":
            raise ValueError("a bug in a parser")
        return build(**kw)

    monkeypatch.setattr(engine, "build_record", flaky)
    with FakeEndpoint() as fake, pytest.raises(RuntimeError, match="could not be recorded") as caught:
        evaluate(_prompt_run(tmp_path, fake.url, 4))
    assert isinstance(caught.value.__cause__, ValueError)
    kept = read_records(tmp_path / "run" / "records" / "fake.ndjson")
    assert sorted(r.item_id for r in kept) == ["0", "2", "3"]  # a rerun redoes item 1 only
