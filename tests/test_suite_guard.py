"""The suite's own guards (conftest.py), each run in a child pytest over a throwaway test file with the same conftest:
a test that leaks process-wide state fails, a hang fails within its limit with every thread's stack printed, a test
stuck where pytest-timeout cannot reach it is ended by faulthandler, and the suite works when launched with SIGINT
ignored (as a background job of a script is)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LEAKS = """
import logging, os, signal, threading, time

def test_env():
    os.environ["COMPTRUST_LEAKED"] = "1"

def test_signal():
    signal.signal(signal.SIGUSR2, lambda *a: None)

def test_logging():
    logging.getLogger().addHandler(logging.StreamHandler())

def test_cwd(tmp_path):
    os.chdir(tmp_path)

def test_thread():
    threading.Thread(target=time.sleep, args=(30,), name="left-behind", daemon=True).start()

def test_clean(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPTRUST_SCOPED", "1")
    monkeypatch.chdir(tmp_path)
    t = threading.Thread(target=time.sleep, args=(0.1,))
    t.start()

def test_after_the_leaks_all_is_back():
    assert "COMPTRUST_LEAKED" not in os.environ and "COMPTRUST_SCOPED" not in os.environ
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
"""

HANGS = """
import signal, threading, time
import pytest

def _wait_forever(event):
    event.wait()

@pytest.mark.timeout(1)
def test_hangs_in_a_join():
    done = threading.Event()
    worker = threading.Thread(target=_wait_forever, args=(done,), name="the-stuck-worker", daemon=True)
    worker.start()
    try:
        worker.join()
    finally:
        done.set()

def test_after_the_hang():
    pass
"""

STUCK = """
import signal, time
import pytest

@pytest.mark.timeout(1)
def test_stuck_where_sigalrm_cannot_reach():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(60)
"""


def _child_pytest(tmp_path: Path, source: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_child.py").write_text(source)
    env = {**os.environ, "COMPTRUST_TEST_HARD_STOP_GRACE_S": "2"}
    env.pop("PYTEST_CURRENT_TEST", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=60", "--rootdir", str(tmp_path)]
    return subprocess.run(
        [*command, *args, str(tmp_path / "test_child.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_test_that_leaks_process_state_fails_and_the_next_starts_clean(tmp_path: Path) -> None:
    result = _child_pytest(tmp_path, LEAKS, "-q")
    out = result.stdout
    assert result.returncode == 1, out
    for name in ("test_env", "test_signal", "test_logging", "test_cwd", "test_thread"):
        assert f"ERROR test_child.py::{name}" in out, out
    assert "environment COMPTRUST_LEAKED: '<unset>' -> '1'" in out
    assert "signal SIGUSR2:" in out
    assert "logger <root>:" in out
    assert "working directory:" in out
    assert "thread still running: left-behind" in out
    assert "7 passed, 5 errors" in out, out  # test_clean and the check after the leaks pass


def test_a_hang_fails_its_test_with_every_threads_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    result = _child_pytest(tmp_path, HANGS, "-q")
    out = result.stdout
    assert result.returncode == 1, out
    assert "Timeout (>1.0s) from pytest-timeout" in out
    assert "Stack of the-stuck-worker" in out and "_wait_forever" in out  # the other thread
    assert "worker.join()" in out  # and the main thread's own traceback
    assert "1 failed, 1 passed" in out


def test_a_test_pytest_timeout_cannot_stop_is_ended_by_faulthandler(tmp_path: Path) -> None:
    result = _child_pytest(tmp_path, STUCK, "-q", timeout=60)
    assert result.returncode != 0
    assert "Timeout (0:00:03)!" in result.stderr, result.stderr  # the test's 1 s limit plus the 2 s grace
    assert "test_stuck_where_sigalrm_cannot_reach" in result.stderr  # every thread's stack, the main one's too


@pytest.mark.timeout(120)
def test_the_fleet_interrupt_test_passes_when_the_suite_starts_with_sigint_ignored(tmp_path: Path) -> None:
    """The CI hang of issue 15: launched as a background job of a non-interactive shell, the suite inherited SIGINT
    ignored, Python kept it so, and the test's own SIGINT was discarded while launch_fleet waited for ever."""
    test = "test_an_interrupt_while_the_fleet_starts_stops_every_spawned_server_without_waiting_for_health"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "timeout=30"]
    result = subprocess.run(
        [*command, f"packages/serve/tests/test_fleet.py::{test}"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
