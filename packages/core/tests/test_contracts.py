from __future__ import annotations

import json
from pathlib import Path

import pytest
from comptrust_core import (
    BackendInfo,
    BaseModelRef,
    CheckpointError,
    ConfigError,
    Endpoint,
    GenerationParams,
    Manifest,
    MeasuredFacts,
    MethodSpec,
    Record,
    RequestSpec,
    SchemaVersionError,
    ScoreField,
    read_endpoints,
    read_manifest,
    record_key,
    write_endpoints,
    write_manifest,
)


def _manifest() -> Manifest:
    return Manifest(
        name="tiny-magnitude",
        base_model=BaseModelRef(source="tiny", kind="local", content_hash="sha256:00"),
        method=MethodSpec(name="magnitude", sparsity=0.5, pattern="2:4"),
        backend=BackendInfo(name="comptrust", version="0.1.0", device="cpu"),
        measured=MeasuredFacts(sparsity=0.5, effective_bits=16.0, wall_time_s=1.0),
        created_at="2026-01-01T00:00:00Z",
        comptrust_version="0.1.0",
    )


def test_manifest_roundtrip(tmp_path: Path) -> None:
    m = _manifest()
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m


def test_manifest_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"no comptrust\.json"):
        read_manifest(tmp_path)


def test_manifest_newer_schema_refused(tmp_path: Path) -> None:
    data = json.loads(_manifest().model_dump_json())
    data["schema_version"] = 99
    (tmp_path / "comptrust.json").write_text(json.dumps(data))
    with pytest.raises(SchemaVersionError, match="upgrade"):
        read_manifest(tmp_path)


def test_endpoints_roundtrip_and_errors(tmp_path: Path) -> None:
    eps = [Endpoint(name="a", url="http://127.0.0.1:1/", manifest=_manifest())]
    path = tmp_path / "endpoints.json"
    write_endpoints(path, eps)
    back = read_endpoints(path)
    assert back == [Endpoint(name="a", url="http://127.0.0.1:1", manifest=_manifest())]
    assert back[0].url == "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="not found"):
        read_endpoints(tmp_path / "missing.json")
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_endpoints(path)
    with pytest.raises(ValueError, match="http"):
        Endpoint(name="a", url="127.0.0.1:1")


def test_record_key_is_stable_and_sensitive() -> None:
    req = RequestSpec(prompt="hi", params=GenerationParams(max_new_tokens=5))
    k = record_key("ep", "t", "1", 0, req)
    assert k == record_key("ep", "t", "1", 0, RequestSpec(prompt="hi", params=GenerationParams(max_new_tokens=5)))
    assert k != record_key("ep", "t", "1", 1, req)
    assert k != record_key("ep2", "t", "1", 0, req)
    assert k != record_key("ep", "t", "1", 0, RequestSpec(prompt="hi", params=GenerationParams(max_new_tokens=6)))


def test_request_needs_one_of_messages_or_prompt() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RequestSpec()
    with pytest.raises(ValueError, match="exactly one"):
        RequestSpec(prompt="x", messages=({"role": "user", "content": "y"},))


def test_error_record_carries_no_scores() -> None:
    req = RequestSpec(prompt="hi")
    base = dict(
        key="k",
        endpoint="e",
        endpoint_url="http://x",
        task="t",
        perspective="p",
        item_id="1",
        request=req,
        protocol="tgi",
        template="none",
        latency_s=0.1,
        attempts=1,
        finished_at="2026-01-01T00:00:00Z",
    )
    with pytest.raises(ValueError, match="no scores"):
        Record(status="error", error="boom", scores=[ScoreField(name="correct", value=1.0)], **base)
    with pytest.raises(ValueError, match="error"):
        Record(status="error", **base)
    ok = Record(status="ok", text="x", **base)
    assert Record.model_validate_json(ok.model_dump_json()) == ok
