"""Endpoint URLs as users write them: a server's root, or an OpenAI-style API base as the openai SDK takes it
(``/v1``, ``/v1/``, ``/api/v1``, ``/openai/v1``): the path is kept, never doubled and never dropped; protocol detection
works on each, and a wrong URL's error says what was asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import EndpointError
from comptrust_evaluate import EvaluateConfig, evaluate
from comptrust_evaluate.config import EndpointSpec
from comptrust_evaluate.protocols.base import openai_bases, server_root
from comptrust_evaluate.testing import FakeEndpoint

from .test_engine import FAST


def _run(tmp_path: Path, url: str, **spec: Any) -> list[dict[str, object]]:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "chat", "messages": [{"role": "user", "content": "Say hi"}]}, {"id": "raw", "prompt": "Hello"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    config = EvaluateConfig(
        out=out,
        endpoints=(EndpointSpec(url=url, **spec),),
        prompts=prompts,
        progress="off",
        retry=FAST,
    )
    evaluate(config)
    (records,) = sorted((out / "records").glob("*.ndjson"))
    return [json.loads(line) for line in records.read_text().splitlines()]


def test_the_url_rules() -> None:
    assert openai_bases("https://host/v1") == ("https://host/v1",)
    assert openai_bases("https://host/api/v1") == ("https://host/api/v1",)
    assert openai_bases("http://127.0.0.1:8080") == ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080")
    assert server_root("https://host/openai/v1") == "https://host/openai"
    assert server_root("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [("", "/v1"), ("", "/v1/"), ("/api", "/v1"), ("/openai", "/v1"), ("/openai", "/v1/"), ("", "")],
)
def test_openai_apis_mounted_anywhere_answer_at_the_path_the_user_gave(
    tmp_path: Path, prefix: str, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTED_KEY", "sk-test")
    with FakeEndpoint(tgi=False, prefix=prefix, api_key="sk-test") as fake:
        records = _run(tmp_path, fake.url + prefix + suffix, api_key_env="HOSTED_KEY")
        assert [r["status"] for r in records] == ["ok", "ok"] and {r["protocol"] for r in records} == {"openai"}
        paths = {p.path for p in fake.posts()}
        assert paths == {f"{prefix}/v1/chat/completions", f"{prefix}/v1/completions"}  # never /v1/v1, never dropped
        assert all(p.headers.get("Authorization") == "Bearer sk-test" for p in fake.posts())


@pytest.mark.parametrize("prefix", ["", "/tgi"])
def test_a_tgi_root_behind_a_prefix_is_detected_and_used(tmp_path: Path, prefix: str) -> None:
    with FakeEndpoint(openai=False, prefix=prefix) as fake:
        records = _run(tmp_path, fake.url + prefix)
        assert [r["status"] for r in records] == ["ok", "ok"] and {r["protocol"] for r in records} == {"tgi"}
        assert {p.path for p in fake.posts()} == {f"{prefix}/v1/chat/completions", f"{prefix}/generate"}


def test_a_tgi_server_named_by_its_api_base_still_works(tmp_path: Path) -> None:
    """``http://host:8080/v1`` for a TGI server: its OpenAI routes live there; so does it, with --protocol tgi."""
    with FakeEndpoint(openai=False) as fake:
        records = _run(tmp_path, fake.url + "/v1", protocol="tgi")
        assert [r["status"] for r in records] == ["ok", "ok"]
        assert {p.path for p in fake.posts()} == {"/v1/chat/completions", "/generate"}


def test_a_wrong_path_names_every_url_it_tried(tmp_path: Path) -> None:
    with FakeEndpoint(tgi=False, prefix="/api") as fake, pytest.raises(EndpointError) as caught:
        _run(tmp_path, fake.url + "/wrong/v1")
    message = str(caught.value)
    assert f"GET {fake.url}/wrong/v1/models: HTTP 404" in message and f"GET {fake.url}/wrong/info" in message
    assert "https://host/api/v1" in message  # what a right one looks like
