"""The CPU dtype decision where servers start: the embedded launcher (decided before the child starts, recorded in
the endpoint, served as decided), the embedded server's own loader, and vLLM's CPU build through the process launcher.
Both kinds of CPU are made with the ``cpu_kind`` fixture (a synthetic measurement in a cache of the test's own)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import torch
from comptrust_serve import LaunchOptions, launch, open_checkpoint
from comptrust_serve.embedded.loader import resolve_dtype
from comptrust_serve.launchers.embedded import embedded_argv, embedded_cpu_dtype
from comptrust_serve.launchers.engines import engine_command
from comptrust_serve.testing import build_tiny_checkpoint

CpuKind = Callable[[Literal["bf16", "no-bf16"]], None]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint stored in bfloat16, as SmolLM2's conversion and every checkpoint `compress` writes are."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bf16") / "tiny-bf16", dtype="bfloat16")


def _served_dtype(url: str) -> str:
    with _OPENER.open(f"{url}/info", timeout=10) as response:
        return str(json.loads(response.read())["model_dtype"])


@pytest.mark.timeout(180)
def test_auto_serves_float32_on_a_cpu_without_bf16_and_the_checkpoints_bf16_where_it_is_fast(
    tiny_bf16: Path, cpu_kind: CpuKind, caplog: pytest.LogCaptureFixture
) -> None:
    cpu_kind("no-bf16")
    with caplog.at_level(logging.INFO, logger="comptrust_serve"), launch(tiny_bf16, dtype="auto") as server:
        assert server.endpoint.dtype == "float32"  # what it computes in, not what was asked
        assert _served_dtype(server.endpoint.url) == "float32"
    why = [r.getMessage() for r in caplog.records if "computing in float32" in r.getMessage()]
    assert len(why) == 1 and "not the checkpoint's bfloat16" in why[0] and "no bfloat16 hardware" in why[0]
    assert "0.25x float32's speed" in why[0]

    cpu_kind("bf16")
    with launch(tiny_bf16, dtype="auto") as server:
        assert server.endpoint.dtype == "bfloat16"
        assert _served_dtype(server.endpoint.url) == "bfloat16"


def test_an_explicit_bf16_is_obeyed_with_a_warning_naming_the_slowdown(
    tiny_bf16: Path, cpu_kind: CpuKind, caplog: pytest.LogCaptureFixture
) -> None:
    cpu_kind("no-bf16")
    checkpoint = open_checkpoint(tiny_bf16)
    options = LaunchOptions(dtype="bfloat16")
    with caplog.at_level(logging.INFO, logger="comptrust_serve"):
        assert embedded_cpu_dtype(checkpoint, options) == "bfloat16"
    argv = embedded_argv(checkpoint, options, 8000)
    assert argv[argv.index("--dtype") + 1] == "bfloat16"  # the child is told what to compute in
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "about 4.0x slower than float32" in warnings[0]
    assert embedded_cpu_dtype(checkpoint, LaunchOptions()) is None  # no --dtype: the server's own CPU default
    assert embedded_cpu_dtype(checkpoint, LaunchOptions(dtype="auto", device="cuda")) == "auto"  # a GPU: its own


def test_no_dtype_on_the_cpu_is_float32_and_needs_no_measurement(
    tiny_bf16: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_measuring() -> None:
        raise AssertionError("measured the CPU for a decision that does not depend on it")

    monkeypatch.setattr("comptrust_core.cpu_dtype.measure_profile", no_measuring)
    monkeypatch.setenv("COMPTRUST_CACHE", str(tiny_bf16.parent / "empty-cache"))
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu, torch.bfloat16) == torch.float32
    assert resolve_dtype("float32", cpu, "bfloat16") == torch.float32
    assert resolve_dtype("auto", cpu, torch.float32) == torch.float32
    assert resolve_dtype(None, torch.device("cuda"), torch.float32) == torch.bfloat16  # GPUs: unchanged


def test_the_embedded_servers_own_loader_decides_the_same_way(cpu_kind: CpuKind) -> None:
    cpu = torch.device("cpu")
    cpu_kind("no-bf16")
    assert resolve_dtype("auto", cpu, torch.bfloat16) == torch.float32
    assert resolve_dtype("bfloat16", cpu, torch.bfloat16) == torch.bfloat16  # asked for: obeyed
    cpu_kind("bf16")
    assert resolve_dtype("auto", cpu, torch.bfloat16) == torch.bfloat16


def _weight_only(folder: Path) -> Path:
    """``folder`` rewritten as a compressed-tensors W4A16 checkpoint's config (what GPTQ, AWQ and RTN write)."""
    config = json.loads((folder / "config.json").read_text())
    weights = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32}
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _vllm_cpu(folder: Path, dtype: str | None) -> str | None:
    """The ``--dtype`` vLLM's CPU build is started with for ``folder`` asked to serve in ``dtype``."""
    command = engine_command(
        open_checkpoint(folder),
        LaunchOptions(engine="vllm", dtype=dtype),
        8123,
        master_port=1,
        environ={"COMPTRUST_VLLM_PYTHON": sys.executable},
    )
    argv = list(command.argv)
    given = argv[argv.index("--dtype") + 1] if "--dtype" in argv else None
    assert command.dtype == given or (given is None and command.dtype == "auto")  # what the endpoint records
    return given


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("comptrust_serve.engine_install.detect_gpus", lambda: None)  # vLLM's CPU build


def test_vllm_cpu_serves_a_bf16_checkpoint_in_float32_where_bf16_is_slow(
    tiny_bf16: Path, cpu_kind: CpuKind, no_gpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    cpu_kind("no-bf16")
    with caplog.at_level(logging.INFO, logger="comptrust_serve"):
        assert _vllm_cpu(tiny_bf16, None) == "float32"  # vLLM would pick bfloat16 by itself
        assert _vllm_cpu(tiny_bf16, "auto") == "float32"
    assert sum("computing in float32" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comptrust_serve"):
        assert _vllm_cpu(tiny_bf16, "bfloat16") == "bfloat16"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    cpu_kind("bf16")
    assert _vllm_cpu(tiny_bf16, None) is None and _vllm_cpu(tiny_bf16, "auto") is None  # vLLM's own choice


def test_vllm_cpu_says_what_bf16_costs_for_w4a16_before_it_starts(
    tiny_bf16: Path, tmp_path: Path, cpu_kind: CpuKind, no_gpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _weight_only(Path(shutil.copytree(tiny_bf16, tmp_path / "w4")))
    cpu_kind("no-bf16")
    with caplog.at_level(logging.INFO, logger="comptrust_serve"):
        dtype = _vllm_cpu(folder, None)
    assert dtype is None  # its kernel needs 16-bit: left to vLLM, which computes it in bfloat16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "W4A16 weights run only in bfloat16" in warnings[0] and "about 4.0x slower than float32" in warnings[0]
    assert "--launcher embedded" in warnings[0]
    caplog.clear()
    cpu_kind("bf16")
    with caplog.at_level(logging.INFO, logger="comptrust_serve"):
        _vllm_cpu(folder, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
