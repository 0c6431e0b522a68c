"""The adaptive concurrency controller as a pure object, the gate that enforces it, and the engine backing off
when a fake endpoint answers 429."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, evaluate, read_records
from comptrust_evaluate.concurrency import AimdController, ConcurrencyGate, TokenBucket
from comptrust_evaluate.config import Limits
from comptrust_evaluate.testing import FakeEndpoint, Fault


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_the_cap_and_halves_on_overload() -> None:
    clock = Clock()
    c = AimdController(cap=64, clock=clock)
    assert c.current == 64
    assert c.on_overload(started_at=clock.now)
    assert c.current == 32 and c.backoffs == 1


def test_backs_off_once_per_episode() -> None:
    clock = Clock()
    c = AimdController(cap=64, cooldown_s=1.0, clock=clock)
    sent = clock.now
    assert c.on_overload(started_at=sent)
    # more 429s from requests sent before the cut say nothing new, however late they come back
    clock.now += 5.0
    assert not c.on_overload(started_at=sent)
    # a request sent after the cut, but answered within the cooldown: the same episode
    clock.now = sent + 0.5
    assert not c.on_overload(started_at=sent + 0.1)
    assert c.current == 32 and c.backoffs == 1
    clock.now = sent + 1.5
    assert c.on_overload(started_at=sent + 1.2)
    assert c.current == 16 and c.backoffs == 2


def test_never_below_the_floor() -> None:
    clock = Clock()
    c = AimdController(cap=8, floor=2, clock=clock)
    for _ in range(10):
        clock.now += 2.0
        c.on_overload(started_at=clock.now)
    assert c.current == 2


def test_grows_additively_back_to_the_cap_only_while_saturated() -> None:
    clock = Clock()
    c = AimdController(cap=64, step=1.0, clock=clock)
    c.on_overload(started_at=clock.now)
    assert c.current == 32
    for _ in range(1000):  # the limit is not reached: a higher one would say nothing new
        c.on_success(saturated=False)
    assert c.current == 32
    for _ in range(33):  # one window of saturated successes (about `limit` of them): +1
        c.on_success(saturated=True)
    assert c.current == 33
    for _ in range(10_000):
        c.on_success(saturated=True)
    assert c.current == 64


def test_a_steady_trickle_of_429s_keeps_the_limit_near_the_cap_when_answers_are_fast() -> None:
    # 5% of requests answered 429 at 3000 requests/s with the limit always saturated: one cut per cooldown, and
    # growth in between brings it back: the limit never collapses to the floor
    clock = Clock()
    c = AimdController(cap=64, clock=clock)
    lowest = 64
    for i in range(30_000):  # ten seconds
        clock.now += 1 / 3000
        if i % 20 == 0:
            c.on_overload(started_at=clock.now - 0.01)
        else:
            c.on_success(saturated=True)
        lowest = min(lowest, c.current)
    assert lowest == 32 and c.backoffs == 10 and c.current >= 48


def test_fixed_never_moves() -> None:
    c = AimdController(cap=16, adaptive=False)
    assert not c.on_overload(started_at=time.monotonic())
    c.on_success(saturated=True)
    assert c.current == 16


def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Limits(max_concurrency=0)
    with pytest.raises(ConfigError):
        Limits(rps=0)
    with pytest.raises(ValueError):
        AimdController(cap=4, floor=5)


def test_token_bucket_with_a_fake_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, burst=2.0, clock=lambda: now[0])
    assert bucket.wait_time() == 0.0 and bucket.wait_time() == 0.0
    assert bucket.wait_time() == pytest.approx(0.1)
    now[0] += 0.1
    assert bucket.wait_time() == 0.0


def test_gate_holds_attempts_to_the_limit() -> None:
    async def main() -> int:
        gate = ConcurrencyGate(AimdController(cap=4))
        gate.controller.on_overload(started_at=time.monotonic())  # limit 2
        peak = 0

        async def one() -> None:
            nonlocal peak
            await gate.acquire()
            try:
                peak = max(peak, gate.in_flight)
                await asyncio.sleep(0.001)
            finally:
                gate.release()

        await asyncio.gather(*(one() for _ in range(20)))
        assert gate.in_flight == 0
        return peak

    assert asyncio.run(main()) == 2


def test_gate_pause_holds_new_attempts_and_cancelling_a_waiter_leaks_nothing() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(AimdController(cap=8))
        gate.pause(3600)
        waiter = asyncio.create_task(gate.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done() and gate.in_flight == 0
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.in_flight == 0 and not gate._waiters

    asyncio.run(main())


def test_gate_spends_rate_tokens() -> None:
    async def main() -> None:
        now = [0.0]
        gate = ConcurrencyGate(AimdController(cap=8), TokenBucket(rate=1.0, burst=2.0, clock=lambda: now[0]))
        await gate.acquire()
        await gate.acquire()
        third = asyncio.create_task(gate.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not third.done() and gate.in_flight == 2
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third

    asyncio.run(main())


def test_429s_push_concurrency_down(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(200)))
    with FakeEndpoint() as fake:
        calls = {"n": 0}

        def every_third(body: object) -> Fault | None:
            calls["n"] += 1
            return Fault(status=429, retry_after="0") if calls["n"] % 3 == 0 else None

        fake.fault_for = every_third
        config = EvaluateConfig(
            out=tmp_path / "run",
            endpoints=(EndpointSpec(url=fake.url, name="fake"),),
            prompts=prompts,
            max_concurrency=32,
            retry=RetryPolicy(max_attempts=20, backoff_base_s=0.001, backoff_max_s=0.01),
            progress="off",
        )
        summary = evaluate(config)
    (ep,) = summary.endpoints
    assert ep.ok == 200 and ep.errors == 0
    assert ep.backoffs > 0 and ep.final_limit < 32
    records = read_records(tmp_path / "run" / "records" / "fake.ndjson")
    assert len({r.key for r in records}) == 200
