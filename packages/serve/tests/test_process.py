"""The ``process`` launcher end to end: fake ``text-generation-launcher``/``vllm`` programs on PATH record the flags
and environment they get and exec the embedded server, so command building, CUDA_VISIBLE_DEVICES, health, logs and
teardown run for real. Also the engines' command lines from manifest hints, and ``--launcher auto``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest
from comptrust_core import (
    ConfigError,
    Manifest,
    MethodSpec,
    ServingHints,
    write_manifest,
)
from comptrust_serve import (
    Checkpoint,
    LaunchOptions,
    ServerHandle,
    ServerStartError,
    Startup,
    launch_checkpoint,
    open_checkpoint,
    pick_auto,
    register_launcher,
)
from comptrust_serve.launchers import _REGISTRY, get_launcher
from comptrust_serve.launchers.engines import engine_command
from comptrust_serve.testing import (
    fake_engine_report,
    install_fake_engines,
    make_manifest,
    process_running,
    processes_naming,
)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def gptq_manifest(name: str) -> Manifest:
    hints = ServingHints(tgi_quantize="compressed-tensors", vllm_quantization="compressed-tensors")
    return make_manifest(name, method=MethodSpec(name="gptq", bits=4), serving=hints)


def flag(argv: Any, name: str) -> str | None:
    assert isinstance(argv, list | tuple)
    return str(argv[list(argv).index(name) + 1]) if name in argv else None


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = install_fake_engines(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder


@pytest.fixture
def quantized(tiny_checkpoint: Path, tmp_path: Path) -> Checkpoint:
    folder = tmp_path / "tiny-gptq"
    shutil.copytree(tiny_checkpoint, folder)
    write_manifest(folder, gptq_manifest("tiny-gptq"))
    return open_checkpoint(folder)


def test_tgi_command_line_on_the_host_is_exactly_this(quantized: Checkpoint) -> None:
    options = LaunchOptions(host="127.0.0.1", gpus=(2, 3), max_input_tokens=100, max_total_tokens=200)
    command = engine_command(quantized, options, 8081, master_port=29600, environ={})
    uds = str(Path(tempfile.gettempdir()) / "comptrust-tgi-8081")
    assert command.argv == (
        *("text-generation-launcher", "--model-id", str(quantized.path), "--hostname", "127.0.0.1", "--port", "8081"),
        *("--quantize", "compressed-tensors", "--num-shard", "2"),  # no --dtype: TGI refuses it next to --quantize
        *("--max-input-tokens", "100", "--max-total-tokens", "200", "--max-concurrent-requests", "128"),
        *("--enable-prefill-logprobs", "--shard-uds-path", uds, "--master-port", "29600"),
    )
    assert command.env == {"CUDA_VISIBLE_DEVICES": "2,3"} and command.protocol == "tgi"
    options = LaunchOptions(quantize="", dtype="float16", trust_remote_code=True, extra_args=("--foo", "1"))
    overridden = engine_command(quantized, options, 8081, master_port=1, environ={})
    assert overridden.argv == (
        *("text-generation-launcher", "--model-id", str(quantized.path), "--hostname", "127.0.0.1", "--port", "8081"),
        *("--dtype", "float16", "--max-concurrent-requests", "128", "--enable-prefill-logprobs"),
        *("--shard-uds-path", uds, "--master-port", "1", "--trust-remote-code", "--foo", "1"),
    )
    assert overridden.env == {}
    with pytest.raises(ConfigError, match="--dtype float16 with --quantize"):
        engine_command(quantized, LaunchOptions(dtype="float16"), 8081, master_port=1, environ={})
    with pytest.raises(ConfigError, match="--num-shard 3 does not match the 2 GPU"):
        engine_command(quantized, LaunchOptions(gpus=(0, 1), num_shard=3), 8081, master_port=1, environ={})


@pytest.mark.parametrize(("stored", "flags"), [("bfloat16", ["--dtype", "bfloat16"]), ("float32", [])])
def test_tgi_takes_a_dense_manifests_dtype_where_it_can(stored: str, flags: list[str]) -> None:
    dense = Checkpoint(Path("/m/dense"), "dense", make_manifest("dense", serving=ServingHints(dtype=stored)))
    command = engine_command(dense, LaunchOptions(), 80, master_port=2, environ={})
    uds = str(Path(tempfile.gettempdir()) / "comptrust-tgi-80")
    assert list(command.argv) == [
        *("text-generation-launcher", "--model-id", "/m/dense", "--hostname", "127.0.0.1", "--port", "80", *flags),
        *("--max-concurrent-requests", "128", "--enable-prefill-logprobs", "--shard-uds-path", uds),
        *("--master-port", "2"),
    ]


def test_vllm_command_line_on_the_host_is_exactly_this(quantized: Checkpoint) -> None:
    options = LaunchOptions(engine="vllm", num_shard=2, max_total_tokens=512, max_batch=16, api_key_env="MY_KEY")
    command = engine_command(quantized, options, 9000, master_port=1, environ={"MY_KEY": "s3cret"})
    assert command.argv == (
        *("vllm", "serve", str(quantized.path), "--served-model-name", "tiny-gptq", "--host", "127.0.0.1"),
        *("--port", "9000", "--max-num-seqs", "16", "--quantization", "compressed-tensors"),
        *("--tensor-parallel-size", "2", "--max-model-len", "512"),
    )
    assert command.protocol == "openai" and command.env == {"VLLM_API_KEY": "s3cret"}
    assert not any("s3cret" in part for part in command.argv)
    tgi = engine_command(quantized, LaunchOptions(gpus=(5,), api_key_env="K"), 1, master_port=2, environ={"K": "v"})
    assert tgi.protocol == "tgi" and tgi.env == {"CUDA_VISIBLE_DEVICES": "5", "API_KEY": "v"}
    with pytest.raises(ConfigError, match=r"environment variable MY_KEY .* is unset or empty"):
        engine_command(quantized, LaunchOptions(api_key_env="MY_KEY"), 1, master_port=2, environ={})


def post(url: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with _OPENER.open(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.timeout(120)
def test_process_launcher_runs_tgi_with_its_flags_gpus_and_key_then_stops_it(
    fake_path: Path, quantized: Checkpoint, tmp_path: Path
) -> None:
    secret = "key-that-must-not-be-logged"
    options = LaunchOptions(
        gpus=(2, 3),
        max_total_tokens=200,
        api_key_env="COMPTRUST_TEST_KEY",
        env={"COMPTRUST_TEST_KEY": secret},
        log_dir=tmp_path / "logs",
        startup_timeout_s=120,
    )
    with launch_checkpoint(quantized, "process", options) as handle:
        endpoint = handle.endpoint
        assert (endpoint.launcher, endpoint.protocol, endpoint.name) == ("process", "tgi", "tiny-gptq")
        assert handle.log_path is not None and handle.log_path.parent == tmp_path / "logs"
        got = fake_engine_report(handle.log_path)
        assert got["CUDA_VISIBLE_DEVICES"] == "2,3" and got["api_key_set"] is True
        port = endpoint.url.rsplit(":", 1)[1]
        assert got["argv"] == [
            *("--model-id", str(quantized.path), "--hostname", "127.0.0.1", "--port", port),
            *("--quantize", "compressed-tensors", "--num-shard", "2", "--max-total-tokens", "200"),
            *("--max-concurrent-requests", "128", "--enable-prefill-logprobs"),
            *("--shard-uds-path", str(Path(tempfile.gettempdir()) / f"comptrust-tgi-{port}")),
            *("--master-port", flag(got["argv"], "--master-port")),
        ]
        body = post(f"{endpoint.url}/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 3}}, secret)
        assert isinstance(body["generated_text"], str)
        running = processes_naming(str(quantized.path))
        assert len(running) == 2  # the guard and the engine it runs
    assert not handle.is_alive()
    assert [pid for pid in running if process_running(pid)] == []
    assert secret not in handle.log_path.read_text()


@pytest.mark.timeout(120)
def test_process_launcher_runs_vllm_as_an_openai_endpoint(
    fake_path: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = open_checkpoint(tiny_checkpoint, "tiny-vllm")
    options = LaunchOptions(engine="vllm", max_total_tokens=128, log_dir=tmp_path, startup_timeout_s=120)
    with launch_checkpoint(checkpoint, "process", options) as handle:
        assert (handle.endpoint.protocol, handle.endpoint.model) == ("openai", "tiny-vllm")
        assert handle.log_path is not None
        got = fake_engine_report(handle.log_path)
        assert got["CUDA_VISIBLE_DEVICES"] is None
        assert got["argv"] == [
            *("serve", str(checkpoint.path), "--served-model-name", "tiny-vllm", "--host", "127.0.0.1"),
            *("--port", handle.endpoint.url.rsplit(":", 1)[1], "--max-num-seqs", "32", "--max-model-len", "128"),
        ]
        body = post(f"{handle.endpoint.url}/v1/completions", {"prompt": "Hello", "max_tokens": 2, "model": "x"})
        assert body["model"] == "tiny-vllm"


def test_an_engine_that_is_not_installed_is_a_clear_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(tiny_checkpoint)
    launcher = get_launcher("process")
    options = LaunchOptions(engine="vllm", env={"PATH": str(tmp_path)})
    with pytest.raises(ConfigError, match="--engine vllm needs vllm on PATH"):
        launcher.launch(checkpoint, options, 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_an_engine_that_fails_is_reported_with_its_log_tail(
    fake_path: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    options = LaunchOptions(log_dir=tmp_path / "logs", startup_timeout_s=120)
    with pytest.raises(ServerStartError, match="exited with code") as caught:
        launch_checkpoint(open_checkpoint(broken), "process", options)
    assert "FAKE-ENGINE" in str(caught.value) and "cannot load" in str(caught.value)
    assert processes_naming(str(broken)) == []


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from comptrust_serve import LaunchOptions, launch_checkpoint, open_checkpoint
handle = launch_checkpoint(open_checkpoint(Path(sys.argv[1])), "process", LaunchOptions(startup_timeout_s=120))
print(handle.endpoint.handle, flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_the_engine_dies_with_the_process_that_launched_it(
    fake_path: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "orphan-check"
    shutil.copytree(tiny_checkpoint, folder)
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert parent.stdout is not None
        guard = int(parent.stdout.readline())
        children = [pid for pid in processes_naming(str(folder)) if pid != parent.pid]
        assert guard in children and len(children) == 2
    finally:
        parent.kill()  # SIGKILL: nothing in the parent cleans up; the guard must notice on its own
        parent.wait()
    deadline = time.monotonic() + 30
    while processes_naming(str(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_naming(str(folder)) == []


class _Unavailable:
    name: ClassVar[str] = "docker"

    def unavailable_reason(self) -> str | None:
        return "no Docker engine answers"

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        raise AssertionError("never launched")


class _Available(_Unavailable):
    def unavailable_reason(self) -> str | None:
        return None


@pytest.fixture
def restore_docker() -> Any:
    saved = _REGISTRY.pop("docker", None)
    yield
    _REGISTRY.pop("docker", None)
    if saved is not None:
        _REGISTRY["docker"] = saved


@pytest.mark.usefixtures("restore_docker")
def test_auto_picks_docker_only_with_an_engine_and_a_gpu_and_says_why_not() -> None:
    launcher, skipped = pick_auto(gpu_count=lambda: 1)
    if "docker" not in _REGISTRY:  # no docker launcher module in this installation
        assert launcher.name == "embedded" and skipped[0].startswith("docker: not available")
    register_launcher("docker")(_Unavailable)
    launcher, skipped = pick_auto(gpu_count=lambda: 4)
    assert launcher.name == "embedded" and skipped == ["docker: no Docker engine answers"]
    register_launcher("docker")(_Available)
    launcher, skipped = pick_auto(gpu_count=lambda: 0)
    assert launcher.name == "embedded" and skipped == ["docker: no NVIDIA GPU found (nvidia-smi lists none)"]
    launcher, skipped = pick_auto(gpu_count=lambda: 2)
    assert launcher.name == "docker" and skipped == []


@pytest.mark.timeout(120)
def test_sigterm_to_the_guard_stops_the_engine(fake_path: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    handle = launch_checkpoint(open_checkpoint(tiny_checkpoint), "process", LaunchOptions(startup_timeout_s=120))
    try:
        pids = processes_naming(str(tiny_checkpoint))
        assert len(pids) == 2
        os.kill(int(handle.endpoint.handle or 0), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while handle.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not handle.is_alive()
        assert [pid for pid in pids if process_running(pid)] == []
    finally:
        handle.stop()
