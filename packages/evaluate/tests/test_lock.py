"""The run-directory lock: a second process can neither evaluate into nor compact a run dir another process holds
(the error names the dir and the holder's pid); a lock left by a killed process is taken over with a warning."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from comptrust_core import RunDirError
from comptrust_evaluate import EndpointSpec, EvaluateConfig, compact_run, evaluate
from comptrust_evaluate.cli import main
from comptrust_evaluate.store import LOCK_FILE, lock_run_dir, records_path
from comptrust_evaluate.testing import FakeEndpoint

_HOLD = """
import sys, time
from pathlib import Path
from comptrust_evaluate.store import lock_run_dir
with lock_run_dir(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def _config(tmp_path: Path, url: str) -> EvaluateConfig:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(5)))
    return EvaluateConfig(
        out=tmp_path / "run", endpoints=(EndpointSpec(url=url, name="fake"),), prompts=prompts, progress="off"
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the lock of ``tmp_path/run`` (a run dir with its records)."""
    with FakeEndpoint() as fake:
        evaluate(_config(tmp_path, fake.url))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        proc.kill()
        proc.wait(30)


def test_a_second_process_cannot_compact_a_held_run_dir(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    run, proc = holder
    with pytest.raises(RunDirError) as info:
        compact_run(run)
    assert str(run) in str(info.value) and f"process {proc.pid}" in str(info.value)
    assert records_path(run, "fake").exists()  # nothing was folded


def test_a_second_process_cannot_evaluate_into_a_held_run_dir(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    run, proc = holder
    before = records_path(run, "fake").read_bytes()
    with FakeEndpoint() as fake, pytest.raises(RunDirError, match=f"in use by process {proc.pid}"):
        evaluate(_config(tmp_path, fake.url))
    assert records_path(run, "fake").read_bytes() == before


def test_the_compact_command_names_the_holder(
    holder: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run, proc = holder
    assert main(["compact", str(run)]) == 2
    assert f"process {proc.pid}" in capsys.readouterr().err


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(
    holder: tuple[Path, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("polars")
    run, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # the dead holder's pid is still in the file
    with caplog.at_level(logging.WARNING, logger="comptrust_evaluate.store.lock"):
        (result,) = compact_run(run)
    assert result.total == 5
    assert any(f"process {proc.pid}, which is no longer running" in r.getMessage() for r in caplog.records)
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly: nothing stale left


def test_the_lock_is_reentrant_within_a_process_and_released_cleanly(tmp_path: Path) -> None:
    with lock_run_dir(tmp_path), lock_run_dir(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (tmp_path / LOCK_FILE).read_text() == ""
    with lock_run_dir(tmp_path):  # and can be taken again, with no warning about a stale holder
        pass
