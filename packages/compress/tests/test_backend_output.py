"""llm-compressor's bars and log lines: quiet when stdout is not a terminal, errors always shown."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comptrust_compress import QUIET_ENV, quiet_backend_output, route_llmcompressor_logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*QUIET_ENV, "LLM_COMPRESSOR_LOG_DISABLED"):
        monkeypatch.setenv(name, "")  # recorded as it was (set or not), so what the test sets is undone
        monkeypatch.delenv(name)
    yield


def test_quiet_only_off_a_terminal_and_not_verbose(clean_env: None) -> None:
    assert quiet_backend_output(_Terminal()) is False
    assert quiet_backend_output(io.StringIO(), verbose=True) is False
    assert not any(name in os.environ for name in QUIET_ENV)
    assert quiet_backend_output(io.StringIO()) is True
    assert {name: os.environ[name] for name in QUIET_ENV} == {
        "TQDM_DISABLE": "1",
        "LLM_COMPRESSOR_LOG_LEVEL": "WARNING",
    }


def test_a_variable_the_user_set_wins(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_COMPRESSOR_LOG_LEVEL", "DEBUG")
    assert quiet_backend_output(io.StringIO()) is True
    assert os.environ["LLM_COMPRESSOR_LOG_LEVEL"] == "DEBUG" and os.environ["TQDM_DISABLE"] == "1"


def test_the_installed_tqdm_honours_tqdm_disable() -> None:
    """llm-compressor passes no ``disable=``: the variable, read when tqdm is first imported, is what turns its bars
    off (checked in a fresh interpreter, where tqdm is imported after the variable is set)."""
    code = "import tqdm; bar = tqdm.tqdm(range(3)); print(bar.disable)"
    for value, shown in (("1", "True"), (None, "False")):
        env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
        if value is not None:
            env["TQDM_DISABLE"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == shown


@pytest.fixture
def llmc_logger() -> Iterator[Any]:
    from llmcompressor import logger as llmc_logger

    logger_module = sys.modules["llmcompressor.logger"]
    saved = dataclasses.replace(logger_module.LOGGER_CONFIG)  # configure_logger writes the variables into it
    yield llmc_logger
    for name in (*QUIET_ENV, "LLM_COMPRESSOR_LOG_DISABLED"):
        os.environ.pop(name, None)
    logger_module.configure_logger(saved)


def test_quiet_llmcompressor_logs_go_to_logging_without_metrics_and_once(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    llmc_logger: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = llmc_logger
    monkeypatch.setenv("LLM_COMPRESSOR_LOG_LEVEL", "WARNING")
    caplog.set_level(logging.DEBUG, logger="llmcompressor")
    assert route_llmcompressor_logs() is True
    logger.info("Quantizing 1 module(s)")
    logger.log("METRIC", "error 219.76")
    for _ in range(3):
        logger.warning("No accelerator available!")
        logger.error("a layer failed")
    got = [(r.name, r.levelno, r.getMessage().split(": ", 1)[1]) for r in caplog.records]
    assert got == [
        ("llmcompressor", logging.WARNING, "No accelerator available!"),
        *[("llmcompressor", logging.ERROR, "a layer failed")] * 3,
    ]
    assert capsys.readouterr().out == ""  # nothing on stdout


def test_on_a_terminal_llmcompressor_logs_stay_as_they_are(
    clean_env: None, llmc_logger: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = llmc_logger
    logger_module = sys.modules["llmcompressor.logger"]
    logger_module.configure_logger(logger_module.LoggerConfig())  # its default: INFO and METRIC to stdout
    caplog.set_level(logging.DEBUG, logger="llmcompressor")
    assert route_llmcompressor_logs() is False
    logger.info("Quantizing 1 module(s)")
    logger.log("METRIC", "error 219.76")
    out = capsys.readouterr().out
    assert "Quantizing 1 module(s)" in out and "error 219.76" in out and caplog.records == []


@pytest.mark.timeout(120)
def test_compress_into_a_pipe_shows_no_bars_nor_per_layer_lines(tiny_model: Path, work: Path) -> None:
    """The whole CLI with stdout a pipe: gptq's calibration bars and per-layer METRIC/INFO lines are gone, the path
    is printed, comptrust's own log lines stay."""
    env = {k: v for k, v in os.environ.items() if k not in (*QUIET_ENV, "LLM_COMPRESSOR_LOG_DISABLED")}
    argv = ["--model", str(tiny_model), "--method", "gptq", "--bits", "4", "--group-size", "32", "--calib-samples"]
    argv += ["4", "--calib-seqlen", "32", "--ppl-tokens", "64", "--device", "cpu", "--out", str(work / "c")]
    code = "import sys; from comptrust_compress.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str(work / "c")
    # llm-compressor's bars (compressed-tensors passes its own disable= to one bar per checkpoint, which stays)
    for noise in ("Calibrating", "Preparing cache", "METRIC", "Quantizing", "compress_module_list"):
        assert noise not in run.stderr, noise
    assert "comptrust_compress.pipeline" in run.stderr
