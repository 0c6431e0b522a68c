"""The ``serve`` command: bad input fails in one line leaving nothing behind; a good run serves until a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from comptrust_core import Endpoint, read_endpoints
from comptrust_serve import probe
from comptrust_serve.cli import main
from comptrust_serve.testing import process_running

CLI = [sys.executable, "-c", "import sys; from comptrust_serve.cli import main; sys.exit(main())"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_missing_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "endpoints.json"
    code, err = run_main(["--model", str(tmp_path / "nope"), "--endpoints-out", str(out)], capsys)
    assert code == 2
    assert err.startswith("serve: error: checkpoint folder not found") and err.count("\n") == 1
    assert not out.exists()


def test_folder_without_weights_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    out = tmp_path / "endpoints.json"
    code, err = run_main(["--model", str(tmp_path / "m"), "--endpoints-out", str(out)], capsys)
    assert code == 2 and "safetensors" in err and err.count("\n") == 1
    assert not out.exists()


def test_busy_port_is_an_error(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "endpoints.json"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_main(
            ["--model", str(tiny_checkpoint), "--port", str(port), "--endpoints-out", str(out)], capsys
        )
    assert code == 2 and "in use" in err and err.count("\n") == 1
    assert not out.exists()


def test_names_must_match_models_and_be_distinct(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--model", str(tiny_checkpoint)]
    code, err = run_main([*model, *model, "--name", "a", "--endpoints-out", str(tmp_path / "e.json")], capsys)
    assert code == 2 and "once per --model" in err
    code, err = run_main([*model, *model, "--endpoints-out", str(tmp_path / "e.json")], capsys)
    assert code == 2 and "--name" in err
    assert not (tmp_path / "e.json").exists()


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            out, _ = process.communicate()
            pytest.fail(f"serve exited with {process.returncode}:\n{out.decode()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("serve wrote no endpoints file in time")
        time.sleep(0.1)


@pytest.fixture
def cli_run(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[Endpoint]]]:
    out = tmp_path / "endpoints.json"
    argv = [*CLI, "--model", str(tiny_checkpoint), "--name", "cli-tiny", "--endpoints-out", str(out)]
    process = subprocess.Popen([*argv, "--log-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_file(out, process)
        yield process, read_endpoints(out)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(120)
def test_serve_runs_until_sigint_then_stops_cleanly(cli_run: tuple[subprocess.Popen[bytes], list[Endpoint]]) -> None:
    process, endpoints = cli_run
    (endpoint,) = endpoints
    assert (endpoint.name, endpoint.launcher, endpoint.protocol) == ("cli-tiny", "embedded", "tgi")
    assert endpoint.engine == "embedded"
    assert probe(endpoint.url)
    child = int(endpoint.handle or 0)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    text = out.decode()
    assert process.returncode == 0, text
    assert "launcher: embedded (picked by --launcher auto; docker: " in text  # and why not docker
    assert f"cli-tiny: {endpoint.url}" in text
    assert not process_running(child)
    assert not probe(endpoint.url, timeout_s=0.5)


@pytest.mark.timeout(120)
def test_servers_exit_when_serve_is_killed(cli_run: tuple[subprocess.Popen[bytes], list[Endpoint]]) -> None:
    process, (endpoint,) = cli_run
    child = int(endpoint.handle or 0)
    process.kill()  # SIGKILL: no cleanup runs in serve; the child must notice on its own
    process.wait()
    deadline = time.monotonic() + 30
    while process_running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_running(child)


@pytest.mark.timeout(120)
def test_serve_exits_non_zero_when_a_server_dies(cli_run: tuple[subprocess.Popen[bytes], list[Endpoint]]) -> None:
    process, (endpoint,) = cli_run
    os.kill(int(endpoint.handle or 0), signal.SIGKILL)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "cli-tiny exited unexpectedly" in out.decode()
