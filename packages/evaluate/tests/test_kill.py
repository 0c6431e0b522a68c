"""A real kill -9 in the middle of a run, then a resume: exactly one record per key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from comptrust_core import RECORDS_DIR
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate
from comptrust_evaluate.testing import FakeEndpoint


def _slow(prompt: str) -> str:
    time.sleep(0.01)
    return f"echo {prompt}"


def test_kill_9_then_resume(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(300)))
    out = tmp_path / "run"
    records = out / RECORDS_DIR / "fake.ndjson"
    with FakeEndpoint(answer=_slow) as fake:
        argv = ["--endpoint", fake.url, "--name", "fake", "--prompts", str(prompts), "--out", str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "comptrust_evaluate", *argv, "--max-concurrency", "4", "--progress", "off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not records.exists() or records.read_text().count("\n") < 30):
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        done_before = records.read_text().count("\n")
        assert 30 <= done_before < 300
        summary = evaluate(
            EvaluateConfig(
                out=out, endpoints=(EndpointSpec(url=fake.url, name="fake"),), prompts=prompts, progress="off"
            )
        )
    keys = [json.loads(line)["key"] for line in records.read_text().splitlines()]
    assert len(keys) == 300 and len(set(keys)) == 300
    assert summary.endpoints[0].resumed >= done_before
