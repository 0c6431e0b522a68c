"""How evaluate drives a faulty endpoint: overload told apart from failure, deadlines that adapt to the endpoint,
a breaker that stops hammering a dead one and picks a restarted one up, and endpoints kept apart. The rules as pure
objects with a fake clock, then against loopback stubs (asserting on counts, states and order, never on time)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, Timeouts, evaluate, read_records
from comptrust_evaluate.cli import main
from comptrust_evaluate.concurrency import Breaker, Deadlines
from comptrust_evaluate.store import records_path
from comptrust_evaluate.testing import FakeEndpoint, Fault

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.005, backoff_max_s=0.02)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- deadlines ------------------------------------------------------------------------------------------------------


def test_the_deadline_is_static_until_the_endpoint_has_answered_enough_of_that_length() -> None:
    d = Deadlines(ceiling_s=600.0, min_samples=20)
    for _ in range(19):
        d.observe(0.05, 64, 5)
    assert d.for_attempt(64) == 600.0
    d.observe(0.05, 64, 5)
    assert d.for_attempt(64) == 1.0  # 10 x 50 ms is under the floor
    assert d.for_attempt(512) == 600.0  # another length: nothing known yet
    assert d.for_attempt(64, cuts=1) == 2.0 and d.for_attempt(64, cuts=3) == 8.0  # a request cut before waits longer
    assert d.for_attempt(64, cuts=20) == 600.0  # never past --timeout


def test_the_deadline_is_a_multiple_of_the_p99_latency_of_that_length() -> None:
    d = Deadlines(ceiling_s=600.0, multiple=10.0, floor_s=1.0)
    for i in range(200):
        d.observe(2.0 if i % 100 == 0 else 0.5, 64, 8)  # 1% of answers take 2 s
    assert d.for_attempt(64) == pytest.approx(20.0)


def test_a_long_generation_is_never_cut_because_earlier_answers_stopped_early() -> None:
    # answers of a 512-token request usually stop after ~20 tokens (1 s); one running to all 512 tokens at the same
    # per-token speed takes ~26 s: the per-token term gives it 2 x 0.05 x 512 = 51 s, not 10 x 1 s
    d = Deadlines(ceiling_s=600.0, multiple=10.0)
    for _ in range(100):
        d.observe(1.0, 512, 20)
    assert d.for_attempt(512) == pytest.approx(2 * (1.0 / 20) * 512)
    assert d.for_attempt(512) > 512 * (1.0 / 20)


def test_a_fixed_timeout_ignores_what_the_endpoint_shows() -> None:
    d = Deadlines(ceiling_s=30.0, adaptive=False)
    for _ in range(100):
        d.observe(0.01, 64, 5)
    assert d.for_attempt(64) == 30.0


# --- breaker --------------------------------------------------------------------------------------------------------


def test_the_breaker_opens_after_failures_in_a_row_only() -> None:
    b = Breaker(threshold=3, clock=Clock())
    for _ in range(10):
        b.on_failure("HTTP 500")
        b.on_failure("HTTP 500")
        b.on_answer()  # a fault now and then: never opens
    assert (b.state, b.admit()) == ("closed", None)
    for _ in range(3):
        b.on_failure("connection refused")
    assert (b.state, b.opened) == ("open", 1)


def test_an_open_breaker_lets_one_probe_through_at_a_slow_rate_and_an_answer_closes_it() -> None:
    clock = Clock()
    b = Breaker(threshold=1, probe_interval_s=1.0, probe_max_s=4.0, give_up_s=60.0, clock=clock)
    b.on_failure("refused")
    assert b.admit() is not None  # nothing at once
    clock.now += 1.0
    assert b.admit() is None and b.probing  # the probe
    assert b.admit() is not None  # one at a time
    b.on_failure("refused", probe=True)
    clock.now += 1.0
    assert b.admit() is not None  # the interval doubled: 2 s
    clock.now += 1.0
    assert b.admit() is None
    b.on_answer()  # the server is back
    assert b.state == "closed" and b.admit() is None and b.failures == 0


def test_a_breaker_open_too_long_gives_the_endpoint_up() -> None:
    clock = Clock()
    b = Breaker(threshold=1, give_up_s=60.0, clock=clock)
    b.on_failure("HTTP 500: down")
    for _ in range(100):
        clock.now += 1.0
        if b.admit() is None:
            b.on_failure("HTTP 500: down", probe=True)
        if b.state == "dead":
            break
    assert b.state == "dead" and clock.now - 1000.0 == 60.0
    assert b.why == "no answer for 60s (HTTP 500: down)"


def test_every_request_permanent_stops_the_endpoint_but_one_answer_ever_keeps_it() -> None:
    b = Breaker(permanent_threshold=5)
    for _ in range(5):
        b.on_permanent("HTTP 404: no such model")
    assert b.state == "dead" and b.why == "every request fails with HTTP 404: no such model"
    b = Breaker(permanent_threshold=5)
    b.on_answer()
    for _ in range(50):
        b.on_permanent("HTTP 400: prompt too long")
    assert b.state == "closed"


# --- against loopback stubs -----------------------------------------------------------------------------------------


def _prompts(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(n)))
    return path


def _config(tmp_path: Path, *urls: str, n: int = 100, **kw: Any) -> EvaluateConfig:
    endpoints = tuple(EndpointSpec(url=url, name=f"e{i}") for i, url in enumerate(urls))
    kw.setdefault("retry", FAST)
    return EvaluateConfig(
        out=tmp_path / "run", endpoints=endpoints, prompts=_prompts(tmp_path, n), progress="off", **kw
    )


def _records(tmp_path: Path, name: str = "e0") -> list[Any]:
    return read_records(records_path(tmp_path / "run", name))


def _answers_then_500(n: int) -> Callable[[Any], Fault | None]:
    """A ``fault_for`` that lets the first ``n`` requests through and answers HTTP 500 to every later one (counted
    across every server it is given to)."""
    lock = threading.Lock()
    seen = {"n": 0}

    def fault(body: Any) -> Fault | None:
        with lock:
            seen["n"] += 1
            return Fault(status=500) if seen["n"] > n else None

    return fault


def _prompt_of(body: Any) -> str:
    messages = body.get("messages") or []
    return str(messages[-1]["content"]) if messages else str(body.get("prompt") or body.get("inputs") or "")


def test_a_retry_after_holds_only_its_own_request(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        told = threading.Event()

        def once_for_q0(body: Any) -> Fault | None:
            if _prompt_of(body) == "q0" and not told.is_set():
                told.set()
                return Fault(status=429, retry_after="1")
            return None

        fake.fault_for = once_for_q0
        summary = evaluate(_config(tmp_path, fake.url, n=60, max_concurrency=4))
        order = [_prompt_of(r.body) for r in fake.posts()]
    (ep,) = summary.endpoints
    assert ep.ok == 60 and ep.errors == 0
    # q0 waited its Retry-After (a second) alone: every other request was sent in the meantime
    assert order.count("q0") == 2 and order.index("q0", 1) == len(order) - 1
    (r0,) = [r for r in _records(tmp_path) if r.item_id == "0"]
    assert r0.attempts == 2


def test_transient_faults_are_retried_and_never_cut_the_limit(tmp_path: Path) -> None:
    faults = [Fault(status=500), Fault(kind="reset"), Fault(kind="malformed"), Fault(status=502)]
    with FakeEndpoint() as fake:
        calls = {"n": 0}
        lock = threading.Lock()

        def every_third(body: Any) -> Fault | None:
            with lock:
                calls["n"] += 1
                n = calls["n"]
            return faults[n % len(faults)] if n % 3 == 0 else None

        fake.fault_for = every_third
        patient = RetryPolicy(max_attempts=20, backoff_base_s=0.005, backoff_max_s=0.02)
        summary = evaluate(_config(tmp_path, fake.url, n=150, max_concurrency=16, retry=patient))
    (ep,) = summary.endpoints
    assert ep.ok == 150 and ep.errors == 0 and ep.retries > 0
    assert ep.backoffs == 0 and ep.final_limit == 16  # transient faults never shrink the limit
    assert {kind for kind, _ in ep.retry_kinds} == {"5xx", "connection", "malformed"}
    assert ep.retries == sum(r.attempts - 1 for r in _records(tmp_path))


def test_overload_cuts_the_limit_once_per_episode(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        fake.faults.extend([Fault(status=429, retry_after="0")] * 16)  # a burst: every slot answered 429 at once
        summary = evaluate(_config(tmp_path, fake.url, n=100, max_concurrency=16))
    (ep,) = summary.endpoints
    assert ep.ok == 100 and ep.backoffs == 1  # one episode, one cut, however many 429s it held


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:

        def reject_q3(body: Any) -> Fault | None:
            return Fault(status=422) if _prompt_of(body) == "q3" else None

        fake.fault_for = reject_q3
        summary = evaluate(_config(tmp_path, fake.url, n=20))
        sent = [_prompt_of(r.body) for r in fake.posts()]
    (ep,) = summary.endpoints
    assert ep.ok == 19 and ep.errors == 1 and ep.retries == 0 and sent.count("q3") == 1
    (bad,) = [r for r in _records(tmp_path) if r.status == "error"]
    assert bad.attempts == 1 and bad.http_status == 422 and "fake fault 422" in (bad.error or "")


def test_a_run_where_every_request_is_permanent_stops_early_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeEndpoint() as fake:
        fake.fault_for = lambda body: Fault(status=404)
        argv = ["--endpoint", fake.url, "--name", "wrong", "--prompts", str(_prompts(tmp_path, 500))]
        code = main([*argv, "--out", str(tmp_path / "run"), "--progress", "off", "--max-concurrency", "4"])
        posts = len(fake.posts())
    assert code == 3
    (line,) = [r.getMessage() for r in caplog.records if r.name == "comptrust_evaluate.cli" and "stopped" in r.message]
    assert "endpoint wrong" in line and "HTTP 404" in line and "requests left" in line
    assert posts < 40  # stopped after about 20, not 500


def test_a_hang_costs_one_adaptive_deadline_and_is_retried(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        lock = threading.Lock()
        seen = {"n": 0}

        def hang_the_fiftieth(body: Any) -> Fault | None:
            with lock:
                seen["n"] += 1
                return Fault(kind="hang", seconds=8.0) if seen["n"] == 50 else None

        fake.fault_for = hang_the_fiftieth
        # --timeout 120 s: without an adaptive deadline the hung request would be waited on until it answers
        timeouts = Timeouts(total_s=120.0, read_s=120.0)
        summary = evaluate(_config(tmp_path, fake.url, n=100, max_concurrency=4, timeouts=timeouts))
    (ep,) = summary.endpoints
    assert ep.ok == 100 and ep.errors == 0 and dict(ep.retry_kinds) == {"deadline": 1}
    assert sorted(r.attempts for r in _records(tmp_path))[-2:] == [1, 2]


def test_a_dead_endpoint_is_stopped_with_what_is_left_and_a_rerun_does_only_that(tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.005, backoff_max_s=0.02, give_up_s=0.5)
    with FakeEndpoint() as fake:
        fake.fault_for = _answers_then_500(30)
        summary = evaluate(_config(tmp_path, fake.url, n=200, max_concurrency=4, retry=retry))
        posts = len(fake.posts())
    (ep,) = summary.endpoints
    assert ep.stopped is not None and "no answer for 0.5s" in ep.stopped and "HTTP 500" in ep.stopped
    records = _records(tmp_path)
    assert ep.left == 200 - len(records) and ep.left > 150
    assert all(r.status == "ok" for r in records)  # the outage's requests were left, not recorded as errors
    assert posts < 80  # the breaker stopped the hammering: not 170 requests x 3 attempts
    with FakeEndpoint() as healthy:  # the same command again, the endpoint fixed: only what is left is sent
        again = _config(tmp_path, healthy.url, n=200, max_concurrency=4)
        (ep2,) = evaluate(again).endpoints
        assert len(healthy.posts()) == ep.left
    assert ep2.stopped is None and ep2.resumed == len(records) and ep2.ok == ep.left
    assert len(_records(tmp_path)) == 200


def test_a_server_restarted_mid_run_is_picked_up(tmp_path: Path) -> None:
    first = FakeEndpoint().start()
    port = int(first.url.rsplit(":", 1)[1])
    restarted: list[FakeEndpoint] = []

    def restart() -> None:
        while len(first.posts()) < 40:
            time.sleep(0.01)
        first.stop()  # killed mid-run: connections refused until it is back
        time.sleep(1.0)
        restarted.append(FakeEndpoint(port=port).start())

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        summary = evaluate(_config(tmp_path, first.url, n=300, max_concurrency=4))
    finally:
        thread.join()
        for fake in restarted:
            fake.stop()
    (ep,) = summary.endpoints
    assert ep.stopped is None and ep.ok == 300 and ep.errors == 0
    assert ep.outages >= 1  # its breaker opened while the server was down, and closed when it came back
    assert len(restarted[0].posts()) > 0


def test_a_sick_endpoint_never_slows_a_healthy_one(tmp_path: Path) -> None:
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.005, backoff_max_s=0.02, give_up_s=1.0)
    with FakeEndpoint() as healthy, FakeEndpoint() as sick:
        sick.fault_for = lambda body: Fault(status=503)
        summary = evaluate(_config(tmp_path, healthy.url, sick.url, n=300, max_concurrency=8, retry=retry))
    fine, ill = summary.endpoints
    assert fine.ok == 300 and fine.retries == 0 and fine.backoffs == 0 and fine.final_limit == 8
    assert fine.stopped is None and fine.outages == 0
    assert ill.stopped is not None and ill.ok == 0 and ill.left == 300
