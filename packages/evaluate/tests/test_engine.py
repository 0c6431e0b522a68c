"""The engine against a loopback fake server: records, resume, retries, errors, protocols, keys."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import RECORDS_DIR, EndpointError, RunDirError, read_run_info
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, RunSummary, evaluate, read_records
from comptrust_evaluate.testing import FakeEndpoint, Fault

FAST = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)
SCORED = {"stereotype", "advglue", "ood", "adv_demonstration", "privacy", "machine_ethics"}


def _config(out: Path, *urls: str, **kw: Any) -> EvaluateConfig:
    specs = kw.pop("specs", None) or tuple(EndpointSpec(url=u) for u in urls)
    if "prompts" not in kw:
        kw.setdefault("suite", "quick")
    return EvaluateConfig(out=out, endpoints=specs, progress="off", retry=kw.pop("retry", FAST), **kw)


def _records_file(out: Path) -> Path:
    (path,) = sorted((out / RECORDS_DIR).glob("*.ndjson"))
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _prompts(tmp_path: Path, *rows: dict[str, Any]) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one_prompt_run(tmp_path: Path, fake: FakeEndpoint, **kw: Any) -> RunSummary:
    prompts = _prompts(tmp_path, {"id": "p1", "messages": [{"role": "user", "content": "Say hi"}]})
    return evaluate(_config(tmp_path / "run", fake.url, prompts=prompts, **kw))


def test_quick_suite_end_to_end(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = evaluate(_config(out, fake.url))
    (ep,) = summary.endpoints
    assert ep.total == ep.ok == 52 and ep.errors == 0
    info = read_run_info(out)
    assert info.plan == "suite quick" and info.plan_hash.startswith("sha256:") and len(info.tasks) == 8
    assert info.endpoints[0].protocol == "tgi" and info.endpoints[0].name == ep.name
    records = read_records(_records_file(out))
    assert len(records) == 52 and len({r.key for r in records}) == 52
    assert {p.path for p in fake.posts()} == {"/v1/chat/completions"}
    for r in records:
        assert r.status == "ok" and r.template == "server" and r.protocol == "tgi" and r.attempts == 1
        assert r.refusal is not None and r.refusal_detector and r.latency_s >= 0
        variants = {s.variant for s in r.scores if s.name == "score"}
        if r.perspective in SCORED:
            assert variants == {"dt-main", "dt-compressed-trust"}, r.perspective
            assert all(0.0 <= (s.value or 0.0) <= 1.0 for s in r.scores)
        else:  # toxicity is scored from per-sample toxicity, fairness from group statistics
            assert not variants
    fair = [r for r in records if r.perspective == "fairness"]
    assert all({s.name for s in r.scores} >= {"y_pred", "y_true"} for r in fair)
    assert all(any(a.name == "sensitive_attr" for a in r.attributes) for r in fair)
    tox = [r for r in records if r.task == "toxicity"]
    assert sorted({r.sample_index for r in tox}) == [0, 1]
    for r in tox:  # the default offline scorer scored every sample and the record names it
        (toxicity,) = [s for s in r.scores if s.name == "toxicity"]
        assert toxicity.variant is None and toxicity.value is not None and 0.0 <= toxicity.value <= 1.0
        named = {a.name: a.value for a in r.attributes}
        assert named["toxicity_scorer"] == "offline"
        assert named["toxicity_scorer_version"] == "alt-profanity-check 1.9.1"
    assert not any(s.name == "toxicity" for r in records if r.task != "toxicity" for s in r.scores)
    assert len({r.request.params.seed for r in tox}) == len(tox)


def test_rerun_resumes_without_duplicates(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    evaluate(_config(out, fake.url))
    sent = len(fake.posts())
    summary = evaluate(_config(out, fake.url))
    assert summary.resumed and summary.endpoints[0].resumed == 52 and summary.endpoints[0].ok == 0
    assert len(fake.posts()) == sent
    assert len(_lines(_records_file(out))) == 52


def test_torn_last_line_is_skipped_with_a_warning(
    fake: FakeEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    evaluate(_config(out, fake.url))
    path = _records_file(out)
    with path.open("a") as fh:
        fh.write('{"schema_version": 1, "key": "0123456789abcdef", "endpo')
    with caplog.at_level(logging.WARNING):
        assert len(read_records(path)) == 52
    assert "torn last line" in caplog.text
    evaluate(_config(out, fake.url))
    lines = _lines(path)
    assert len(lines) == 52 and all(json.loads(line) for line in lines)


def test_killed_mid_run_then_resumed_has_one_record_per_key(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    evaluate(_config(out, fake.url))
    path = _records_file(out)
    lines = _lines(path)
    path.write_text("\n".join(lines[:20]) + "\n" + lines[20][: len(lines[20]) // 2])  # as a kill -9 leaves it
    before = len(fake.posts())
    evaluate(_config(out, fake.url))
    assert len(fake.posts()) - before == 32
    keys = [json.loads(line)["key"] for line in _lines(path)]
    assert len(keys) == 52 and len(set(keys)) == 52


def test_retry_errors_redoes_error_records(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake.fault_for = lambda body: Fault(status=400) if "funy and surprisingly" in json.dumps(body) else None
    summary = evaluate(_config(out, fake.url))
    assert summary.endpoints[0].errors == 1
    (bad,) = [r for r in read_records(_records_file(out)) if r.status == "error"]
    assert bad.attempts == 1 and bad.http_status == 400 and "fake fault 400" in (bad.error or "") and not bad.scores
    fake.fault_for = None
    before = len(fake.posts())
    evaluate(_config(out, fake.url))  # plain rerun: the error record counts as finished
    assert len(fake.posts()) == before
    summary = evaluate(_config(out, fake.url, retry_errors=True))
    assert summary.endpoints[0].ok == 1 and len(fake.posts()) == before + 1
    records = read_records(_records_file(out))
    assert len(_lines(_records_file(out))) == 52 and all(r.status == "ok" for r in records)


def test_500_then_success_is_retried(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.faults.extend([Fault(status=500), Fault(status=503)])
    _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert record.status == "ok" and record.attempts == 3


def test_429_honours_retry_after(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.faults.append(Fault(status=429, retry_after="1"))
    _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    first, second = fake.posts()
    assert record.status == "ok" and record.attempts == 2
    assert second.at - first.at >= 0.9  # the backoff alone would be ~0.01 s


def test_malformed_json_and_reset_connection_are_retried(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.faults.extend([Fault(kind="malformed"), Fault(kind="reset")])
    _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert record.status == "ok" and record.attempts == 3


def test_gives_up_after_max_attempts(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.faults.extend([Fault(status=502)] * 5)
    summary = _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert summary.errors == 1 and record.status == "error" and record.attempts == 3 and record.http_status == 502
    assert "gave up after 3 attempts" in (record.error or "")


def test_timeout_is_retried(fake: FakeEndpoint, tmp_path: Path) -> None:
    from comptrust_evaluate import Timeouts

    fake.faults.append(Fault(kind="hang", seconds=2.0))
    _one_prompt_run(tmp_path, fake, timeouts=Timeouts(connect_s=1.0, read_s=0.3, total_s=0.5))
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert record.status == "ok" and record.attempts == 2


def test_4xx_becomes_an_error_record_at_once(fake: FakeEndpoint, tmp_path: Path) -> None:
    fake.faults.append(Fault(status=422))
    _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert record.status == "error" and record.attempts == 1 and record.http_status == 422
    assert len(fake.posts()) == 1


def test_an_empty_generation_is_an_answer_not_an_error(tmp_path: Path) -> None:
    """DecodingTrust scores a blank answer (wrong, unparseable, -1 toxicity, counted in privacy's total); only a
    request that got no answer is an error."""
    with FakeEndpoint(answer=lambda prompt: "  ") as fake:
        _one_prompt_run(tmp_path, fake)
    (record,) = read_records(_records_file(tmp_path / "run"))
    assert record.status == "ok" and record.error is None and record.text == "  "
    assert record.refusal is not None


def test_different_run_in_out_is_refused(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    evaluate(_config(out, fake.url, limit=1))
    with pytest.raises(RunDirError, match="holds a different run"):
        evaluate(_config(out, fake.url))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not an empty folder"):
        evaluate(_config(tmp_path / "other", fake.url))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_endpoint_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(EndpointError, match="unreachable") as err:
        evaluate(_config(tmp_path / "run", url))
    assert "\n" not in str(err.value) and url in str(err.value)
    assert not (tmp_path / "run").exists()


def test_wrong_protocol_is_a_clear_error(tmp_path: Path) -> None:
    with FakeEndpoint(tgi=False) as fake:
        spec = EndpointSpec(url=fake.url, protocol="tgi")
        with pytest.raises(EndpointError, match="does not speak TGI"):
            evaluate(_config(tmp_path / "a", specs=(spec,)))
    with FakeEndpoint(tgi=False, openai=False) as fake, pytest.raises(EndpointError, match="speaks neither"):
        evaluate(_config(tmp_path / "b", fake.url))


def test_prompts_on_tgi_use_generate_for_raw_prompts(fake: FakeEndpoint, tmp_path: Path) -> None:
    prompts = _prompts(
        tmp_path,
        {"id": "raw", "prompt": "Once upon a time", "max_new_tokens": 5, "temperature": 0.8, "n": 3},
        {"id": "chat", "messages": [{"role": "user", "content": "hi"}], "logprobs": True},
    )
    evaluate(_config(tmp_path / "run", fake.url, prompts=prompts))
    records = read_records(_records_file(tmp_path / "run"))
    raw = sorted((r for r in records if r.item_id == "raw"), key=lambda r: r.sample_index)
    assert [r.sample_index for r in raw] == [0, 1, 2] and {r.template for r in raw} == {"none"}
    assert raw[0].task == raw[0].perspective == "custom" and raw[0].refusal_detector == "broad"
    assert raw[0].finish_reason == "eos_token" and raw[0].completion_tokens and raw[0].logprobs is None
    generate = [p for p in fake.posts() if p.path == "/generate"]
    assert len(generate) == 3 and len({p.body["parameters"]["seed"] for p in generate}) == 3
    assert generate[0].body["parameters"]["do_sample"] is True and generate[0].body["parameters"]["details"] is True
    (chat,) = [r for r in records if r.item_id == "chat"]
    assert chat.template == "server" and chat.prompt_tokens == 11


def test_openai_protocol_key_and_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-0123456789-SECRET"
    monkeypatch.setenv("FAKE_API_KEY", secret)
    prompts = _prompts(
        tmp_path,
        {"id": "raw", "prompt": "Once upon a time"},
        {"id": "chat", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]},
    )
    out = tmp_path / "run"
    with FakeEndpoint(tgi=False, api_key=secret) as fake, caplog.at_level(logging.DEBUG):
        fake.faults.append(Fault(status=500))
        spec = EndpointSpec(url=fake.url, name="hosted", api_key_env="FAKE_API_KEY")
        summary = evaluate(_config(out, specs=(spec,), prompts=prompts))
        posts = fake.posts()
    assert summary.endpoints[0].protocol == "openai" and summary.errors == 0
    assert {p.path for p in posts} == {"/v1/completions", "/v1/chat/completions"}
    assert all(p.body["model"] == "fake-model" for p in posts)
    assert all(p.headers["Authorization"] == f"Bearer {secret}" for p in posts)
    records = read_records(out / RECORDS_DIR / "hosted.ndjson")
    assert {r.template for r in records} == {"none", "server"} and {r.protocol for r in records} == {"openai"}
    info = read_run_info(out)
    assert info.endpoints[0].api_key_env == "FAKE_API_KEY" and info.endpoints[0].model == "fake-model"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text()
    assert secret not in caplog.text


def test_missing_api_key_variable_is_named(monkeypatch: pytest.MonkeyPatch, fake: FakeEndpoint, tmp_path: Path) -> None:
    monkeypatch.delenv("NOT_SET_KEY_VAR", raising=False)
    spec = EndpointSpec(url=fake.url, api_key_env="NOT_SET_KEY_VAR")
    with pytest.raises(EndpointError, match="NOT_SET_KEY_VAR is not set"):
        evaluate(_config(tmp_path / "run", specs=(spec,)))


def test_wrong_key_is_refused_at_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_API_KEY", "wrong-key-value")
    with FakeEndpoint(tgi=False, api_key="right") as fake:
        spec = EndpointSpec(url=fake.url, protocol="openai", api_key_env="FAKE_API_KEY")
        with pytest.raises(EndpointError, match=r"HTTP 401.*FAKE_API_KEY") as err:
            evaluate(_config(tmp_path / "run", specs=(spec,)))
    assert "wrong-key-value" not in str(err.value)


def test_two_endpoints_run_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeEndpoint() as a, FakeEndpoint() as b:
        specs = (EndpointSpec(url=a.url, name="dense"), EndpointSpec(url=b.url, name="gptq-4bit"))
        summary = evaluate(_config(out, specs=specs, max_concurrency=4, limit=1))
        assert len(a.posts()) == len(b.posts()) > 0
    assert [e.name for e in summary.endpoints] == ["dense", "gptq-4bit"]
    assert sorted(p.name for p in (out / RECORDS_DIR).iterdir()) == ["dense.ndjson", "gptq-4bit.ndjson"]
    with pytest.raises(Exception, match="unique"), FakeEndpoint() as c:
        evaluate(
            _config(tmp_path / "dup", specs=(EndpointSpec(url=c.url, name="x"), EndpointSpec(url=c.url, name="x")))
        )


def test_a_seed_is_sent_only_where_sampling_needs_it(fake: FakeEndpoint, tmp_path: Path) -> None:
    """Greedy requests keep their seed in the record (the request's identity) but never send it (a seed on every
    request is what crashed vLLM's CPU engine); sampled ones send theirs."""
    evaluate(_config(tmp_path / "run", fake.url))
    bodies = [p.body for p in fake.posts()]
    greedy = [b for b in bodies if not b.get("temperature") and not (b.get("parameters") or {}).get("do_sample")]
    sampled = [b for b in bodies if b not in greedy]
    assert greedy and sampled
    assert all("seed" not in b and "seed" not in (b.get("parameters") or {}) for b in greedy)
    assert all("seed" in b or "seed" in (b.get("parameters") or {}) for b in sampled)
    records = read_records(_records_file(tmp_path / "run"))
    assert all(r.request.params.seed is not None for r in records)
