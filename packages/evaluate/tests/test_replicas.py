"""Replicas: one logical endpoint served by several servers of the same checkpoint (issue 20, must 4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from comptrust_core import Endpoint
from comptrust_evaluate import EndpointSpec, RetryPolicy, evaluate
from comptrust_evaluate.cli import main
from comptrust_evaluate.testing import FakeEndpoint

from .test_resilience import _answers_then_500, _config, _records


def test_replicas_share_one_endpoints_requests_each_exactly_once(tmp_path: Path) -> None:
    with FakeEndpoint() as a, FakeEndpoint() as b:
        config = _config(tmp_path, a.url, n=200, max_concurrency=4)
        spec = EndpointSpec(url=a.url, name="e0", replicas=(b.url,))
        (ep,) = evaluate(dataclasses.replace(config, endpoints=(spec,))).endpoints
        sent = {a.url: len(a.posts()), b.url: len(b.posts())}
    records = _records(tmp_path)
    assert ep.ok == 200 and ep.stopped is None
    assert len(records) == 200 and len({r.key for r in records}) == 200
    assert {r.endpoint for r in records} == {"e0"}
    served = {url: sum(r.endpoint_url == url for r in records) for url in sent}
    assert served == sent and min(sent.values()) > 40  # both servers took a real share


def test_replicas_of_a_launched_servers_endpoint_each_get_their_own_url(tmp_path: Path) -> None:
    """A spec made from a launched server's Endpoint (what sweep passes) keeps its replicas' own URLs."""
    with FakeEndpoint() as a, FakeEndpoint() as b:
        config = _config(tmp_path, a.url, n=60, max_concurrency=4)
        base = Endpoint(name="ckpt", url=a.url, checkpoint="ckpts/ckpt", launcher="embedded")
        spec = dataclasses.replace(EndpointSpec.from_endpoint(base), replicas=(b.url,))
        (ep,) = evaluate(dataclasses.replace(config, endpoints=(spec,))).endpoints
        sent = {a.url: len(a.posts()), b.url: len(b.posts())}
    records = _records(tmp_path, "ckpt")
    assert ep.ok == 60 and len({r.key for r in records}) == 60
    assert min(sent.values()) > 5, sent  # a replica resolved to the first server's URL would leave b idle
    assert {r.endpoint for r in records} == {"ckpt"}


def test_a_replica_given_up_hands_its_requests_to_the_others(tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.005, backoff_max_s=0.02, give_up_s=0.5)
    with FakeEndpoint() as healthy, FakeEndpoint() as sick:
        sick.fault_for = _answers_then_500(20)
        config = _config(tmp_path, healthy.url, n=200, max_concurrency=4, retry=retry)
        spec = EndpointSpec(url=healthy.url, name="e0", replicas=(sick.url,))
        (ep,) = evaluate(dataclasses.replace(config, endpoints=(spec,))).endpoints
    records = _records(tmp_path)
    assert ep.stopped is None and ep.left == 0 and ep.ok == 200
    assert len(records) == 200 and len({r.key for r in records}) == 200 and all(r.status == "ok" for r in records)
    assert 0 < sum(r.endpoint_url == sick.url for r in records) <= 20


def test_comma_separated_urls_on_the_command_line_are_replicas(tmp_path: Path) -> None:
    with FakeEndpoint() as a, FakeEndpoint() as b:
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(f'{{"id": {i}, "prompt": "q{i}"}}\n' for i in range(40)))
        argv = ["--endpoint", f"{a.url},{b.url}", "--name", "ckpt", "--prompts", str(prompts)]
        code = main([*argv, "--out", str(tmp_path / "r"), "--progress", "off", "--max-concurrency", "2"])
        assert code == 0 and a.posts() and b.posts() and len(a.posts()) + len(b.posts()) == 40


def test_when_every_replica_is_given_up_the_endpoint_stops_and_a_rerun_does_the_rest(tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.005, backoff_max_s=0.02, give_up_s=0.5)
    with FakeEndpoint() as a, FakeEndpoint() as b:
        a.fault_for = b.fault_for = _answers_then_500(30)
        config = _config(tmp_path, a.url, n=200, max_concurrency=4, retry=retry)
        spec = EndpointSpec(url=a.url, name="e0", replicas=(b.url,))
        (ep,) = evaluate(dataclasses.replace(config, endpoints=(spec,))).endpoints
    done = _records(tmp_path)
    assert ep.stopped is not None and ep.left == 200 - len(done) > 100
    assert all(r.status == "ok" for r in done) and len({r.key for r in done}) == len(done)
    with FakeEndpoint() as c, FakeEndpoint() as d:
        config = _config(tmp_path, c.url, n=200, max_concurrency=4)
        spec = EndpointSpec(url=c.url, name="e0", replicas=(d.url,))
        (again,) = evaluate(dataclasses.replace(config, endpoints=(spec,))).endpoints
    records = _records(tmp_path)
    assert again.stopped is None and again.ok == ep.left
    assert len(records) == 200 and len({r.key for r in records}) == 200
