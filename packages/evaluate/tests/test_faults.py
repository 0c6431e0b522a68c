"""A few hundred requests against a fake endpoint that fails on purpose at set rates (500s, 429s with Retry-After,
connection resets, hangs past the timeout, malformed JSON): every request ends as exactly one ok or error record."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from comptrust_evaluate import EndpointSpec, EvaluateConfig, RetryPolicy, Timeouts, evaluate, read_records
from comptrust_evaluate.store import records_path
from comptrust_evaluate.testing import FakeEndpoint, Fault

N = 300
FAULTS = (
    (0.08, Fault(status=500)),
    (0.08, Fault(status=429, retry_after="0.05")),
    (0.05, Fault(status=503)),
    (0.06, Fault(kind="reset")),
    (0.03, Fault(kind="hang", seconds=1.5)),
    (0.06, Fault(kind="malformed")),
)


class _Chaos:
    """Picks a fault (or none) for each POST with a seeded generator, counting what it did."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def __call__(self, body: Any) -> Fault | None:
        with self.lock:
            x = self.rng.random()
            for rate, fault in FAULTS:
                if x < rate:
                    name = f"{fault.kind}{fault.status if fault.kind == 'status' else ''}"
                    self.counts[name] = self.counts.get(name, 0) + 1
                    return fault
                x -= rate
        return None


@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "fixed"])
def test_faults_at_set_rates_lose_and_duplicate_nothing(tmp_path: Path, adaptive: bool) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(N)))
    chaos = _Chaos(seed=7)
    with FakeEndpoint() as fake:
        fake.fault_for = chaos
        config = EvaluateConfig(
            out=tmp_path / "run",
            endpoints=(EndpointSpec(url=fake.url, name="fake"),),
            prompts=prompts,
            max_concurrency=32,
            adaptive_concurrency=adaptive,
            retry=RetryPolicy(max_attempts=4, backoff_base_s=0.005, backoff_max_s=0.02),
            timeouts=Timeouts(connect_s=2.0, read_s=0.5, total_s=1.0),
            progress="off",
        )
        summary = evaluate(config)
        posts = len(fake.posts())
    # every kind of fault happened
    assert set(chaos.counts) == {"status500", "status429", "status503", "reset", "hang", "malformed"}
    lines = records_path(tmp_path / "run", "fake").read_text().splitlines()
    records = read_records(records_path(tmp_path / "run", "fake"))
    assert len(lines) == len(records) == N  # none lost, none written twice
    assert {r.item_id for r in records} == {str(i) for i in range(N)}
    assert all(r.status in ("ok", "error") for r in records)
    (ep,) = summary.endpoints
    for r in records:
        if r.status == "error":
            assert r.error and "gave up after 4 attempts" in r.error and not r.scores
        else:
            assert r.text and r.attempts >= 1
            # a request spends its 4 attempts only while the endpoint answers: sent while the breaker was open (the
            # endpoint down, seen when a loaded machine slows the fake endpoint past the timeouts), it waits for the
            # probe without spending them, so more sends are possible only after an outage
            assert r.attempts <= 4 or ep.outages > 0, (r.attempts, ep.outages)
    assert ep.ok + ep.errors == N and ep.ok > 0.9 * N
    assert ep.retries == sum(r.attempts - 1 for r in records)
    assert posts <= sum(r.attempts for r in records)  # no attempt sent twice behind the engine's back
    if adaptive:
        assert ep.backoffs > 0
