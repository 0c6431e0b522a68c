"""The docker launcher's pure parts, without an engine: command lines per engine, mounts, ports, labels, GPU device
requests, ulimits, owners; and the errors when no engine is there."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import ConfigError
from comptrust_serve import Checkpoint, LaunchOptions, get_launcher, launch_fleet, launcher_names, open_checkpoint
from comptrust_serve.cli import main
from comptrust_serve.launchers.containers import (
    LABEL,
    MANAGED,
    MODEL_MOUNT,
    ULIMITS_ENV,
    Owner,
    container_name,
    container_spec,
    container_ulimits,
    current_owner,
)
from comptrust_serve.launchers.docker import engine_address
from comptrust_serve.launchers.engines import engine_command
from comptrust_serve.manage import ManagedContainer, _table
from comptrust_serve.testing import write_fake_checkpoint

OWNER = Owner("host-a", 4242, "777")


def quantized(tmp_path: Path) -> Checkpoint:
    """A checkpoint whose manifest asks for gptq."""
    return open_checkpoint(write_fake_checkpoint(tmp_path / "m gptq", quantize="gptq"), "m-gptq")


DENSE = Checkpoint(path=Path("/ckpt/dense"), name="dense")


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def command(checkpoint: Checkpoint, options: LaunchOptions) -> list[str]:
    """The container's command (its image's entrypoint is the engine's program) for host port 8123."""
    return container_spec(checkpoint, options, 8123, owner=OWNER, environ={}).command


def test_tgi_command_line_in_a_container_is_exactly_this(tmp_path: Path) -> None:
    checkpoint = quantized(tmp_path)
    mount = ["--model-id", MODEL_MOUNT, "--hostname", "0.0.0.0", "--port", "80"]  # the host port is mapped outside
    assert command(checkpoint, LaunchOptions(max_concurrent_requests=64)) == [
        *mount,
        *("--quantize", "gptq", "--max-concurrent-requests", "64", "--enable-prefill-logprobs"),
    ]
    options = LaunchOptions(
        quantize="awq",
        max_input_tokens=1000,
        max_total_tokens=1512,
        gpus=(2, 3),
        trust_remote_code=True,
        extra_args=("--foo",),
    )
    assert command(checkpoint, options) == [
        *mount,
        *("--quantize", "awq", "--num-shard", "2", "--max-input-tokens", "1000", "--max-total-tokens", "1512"),
        *("--max-concurrent-requests", "128", "--enable-prefill-logprobs", "--trust-remote-code", "--foo"),
    ]
    tail = ["--max-concurrent-requests", "128", "--enable-prefill-logprobs"]
    # no quantization: the manifest's dtype (its serving hint) is TGI's
    assert command(checkpoint, LaunchOptions(quantize="")) == [*mount, "--dtype", "bfloat16", *tail]
    assert command(DENSE, LaunchOptions(dtype="bfloat16", num_shard=1)) == [
        *mount,
        *("--dtype", "bfloat16", "--num-shard", "1", *tail),
    ]
    assert command(DENSE, LaunchOptions(gpus=(0,), dtype="auto")) == [*mount, "--num-shard", "1", *tail]


def test_vllm_command_line_in_a_container_is_exactly_this(tmp_path: Path) -> None:
    options = LaunchOptions(engine="vllm", max_total_tokens=4096, gpus=(0, 1, 2, 3), num_shard=4, max_batch=16)
    assert command(quantized(tmp_path), options) == [
        *(MODEL_MOUNT, "--served-model-name", "m-gptq", "--host", "0.0.0.0", "--port", "8000"),
        *("--max-num-seqs", "16", "--quantization", "gptq", "--tensor-parallel-size", "4", "--max-model-len", "4096"),
    ]
    head = [MODEL_MOUNT, "--served-model-name", "dense", "--host", "0.0.0.0", "--port", "8000", "--max-num-seqs", "32"]
    assert command(DENSE, LaunchOptions(engine="vllm", dtype="float32")) == [*head, "--dtype", "float32"]
    assert command(DENSE, LaunchOptions(engine="vllm", dtype="auto", trust_remote_code=True)) == [
        *head,
        "--trust-remote-code",
    ]


def test_host_and_container_command_lines_differ_only_in_where_the_engine_runs(tmp_path: Path) -> None:
    checkpoint = quantized(tmp_path)
    inside = {str(checkpoint.path): MODEL_MOUNT, "127.0.0.1": "0.0.0.0"}
    for options, program, port in (
        (LaunchOptions(gpus=(0, 1), max_total_tokens=300, trust_remote_code=True), 1, "80"),
        (LaunchOptions(engine="vllm", num_shard=2, dtype="float16"), 2, "8000"),
    ):
        host = list(engine_command(checkpoint, options, 8123, master_port=5, environ={}).argv[program:])
        if options.engine == "tgi":  # TGI's own shard socket and NCCL port, only where several share a host
            uds = str(Path(tempfile.gettempdir()) / "comptrust-tgi-8123")
            assert host[-5:] == ["--shard-uds-path", uds, "--master-port", "5", "--trust-remote-code"]
            host = [*host[:-5], "--trust-remote-code"]
        assert command(checkpoint, options) == [port if part == "8123" else inside.get(part, part) for part in host]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LaunchOptions(dtype="float32"), "TGI takes --dtype float16 or bfloat16"),
        (LaunchOptions(dtype="float16", quantize="gptq"), "TGI cannot take --dtype float16 with --quantize gptq"),
        (LaunchOptions(max_input_tokens=512, max_total_tokens=512), "must be below --max-total-tokens"),
        (LaunchOptions(max_total_tokens=0), "--max-total-tokens must be a positive"),
        (LaunchOptions(num_shard=4, gpus=(0, 1)), "--num-shard 4 does not match the 2 GPU"),
        (LaunchOptions(num_shard=0), "--num-shard must be at least 1"),
        (LaunchOptions(engine="vllm", max_input_tokens=512), "vLLM has no separate input limit"),
    ],
)
def test_bad_engine_options_are_config_errors(options: LaunchOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        container_spec(DENSE, options, 8080, owner=OWNER, environ={})


def test_a_docker_fleet_refuses_bad_engine_flags_before_asking_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")  # reaching for the engine would fail differently
    with pytest.raises(ConfigError, match="vLLM has no separate input limit"):
        launch_fleet([DENSE], get_launcher("docker"), LaunchOptions(engine="vllm", max_input_tokens=5))


def test_container_spec_mounts_ports_labels_and_environment(tmp_path: Path) -> None:
    options = LaunchOptions(host="127.0.0.1", api_key_env="MY_KEY", env={"EXTRA": "1"}, extra_args=("--foo",))
    checkpoint = quantized(tmp_path)
    spec = container_spec(checkpoint, options, 8123, owner=OWNER, environ={"MY_KEY": "k"})
    assert spec.image == "ghcr.io/huggingface/text-generation-inference:3.3.5"
    assert spec.name == "comptrust-m-gptq-8123" and spec.command[-1] == "--foo"
    assert spec.environment["API_KEY"] == "k" and spec.environment["EXTRA"] == "1"
    assert spec.environment["HF_HUB_OFFLINE"] == "1"
    assert spec.labels == {
        MANAGED: "true",
        LABEL["name"]: "m-gptq",
        LABEL["checkpoint"]: str(checkpoint.path),
        LABEL["engine"]: "tgi",
        LABEL["protocol"]: "tgi",
        LABEL["url"]: "http://127.0.0.1:8123",
        LABEL["port"]: "8123",
        LABEL["gpus"]: "",
        LABEL["owner_host"]: "host-a",
        LABEL["owner_pid"]: "4242",
        LABEL["owner_start"]: "777",
    }
    kwargs: dict[str, Any] = spec.create_kwargs()
    assert kwargs["ports"] == {"80/tcp": ("127.0.0.1", 8123)}
    [mount] = kwargs["mounts"]
    assert (mount["Target"], mount["Source"], mount["Type"], mount["ReadOnly"]) == (
        MODEL_MOUNT,
        str(checkpoint.path),
        "bind",
        True,
    )
    assert kwargs["device_requests"] == [] and kwargs["shm_size"] == "1g" and kwargs["detach"] is True
    assert {u["Name"] for u in kwargs["ulimits"]} == {"nofile", "nproc"}


def test_vllm_spec_uses_its_image_port_key_variable_and_gpus() -> None:
    options = LaunchOptions(engine="vllm", gpus=(1, 3), shm_size="8g", api_key_env="K", image="my/vllm:dev")
    spec = container_spec(DENSE, options, 9000, owner=OWNER, environ={"K": "v"})
    kwargs = spec.create_kwargs()
    assert kwargs["image"] == "my/vllm:dev" and kwargs["ports"] == {"8000/tcp": ("127.0.0.1", 9000)}
    assert kwargs["environment"]["VLLM_API_KEY"] == "v" and "API_KEY" not in kwargs["environment"]
    [request] = kwargs["device_requests"]
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert kwargs["shm_size"] == "8g" and spec.labels[LABEL["gpus"]] == "1,3"
    assert spec.labels[LABEL["protocol"]] == "openai" and flag(spec.command, "--tensor-parallel-size") == "2"
    assert container_spec(DENSE, LaunchOptions(engine="vllm"), 1, owner=OWNER, environ={}).image.startswith(
        "vllm/vllm-openai:"
    )


def test_missing_api_key_and_unknown_engine() -> None:
    with pytest.raises(ConfigError, match=r"environment variable NOPE \(named by --api-key-env\) is unset or empty"):
        container_spec(DENSE, LaunchOptions(api_key_env="NOPE"), 1, owner=OWNER, environ={})
    with pytest.raises(ConfigError, match="unknown engine 'sglang'"):
        container_spec(DENSE, LaunchOptions(engine="sglang"), 1, owner=OWNER, environ={})  # type: ignore[arg-type]


def test_container_names_and_ulimits() -> None:
    assert container_name("a b/c:d", 80) == "comptrust-a-b-c-d-80"
    defaults = container_ulimits({})
    assert set(defaults) == {"nofile", "nproc"}
    assert all(0 < soft == hard <= 1 << 20 for soft, hard in defaults.values())
    assert container_ulimits({ULIMITS_ENV: "nofile=1024, nproc=10:20"}) == {"nofile": (1024, 1024), "nproc": (10, 20)}
    with pytest.raises(ConfigError, match=ULIMITS_ENV):
        container_ulimits({ULIMITS_ENV: "nofile=lots"})


def test_owner_labels_round_trip_and_liveness() -> None:
    me = current_owner()
    assert Owner.from_labels(me.labels()) == me and not me.is_gone()
    assert (
        Owner.from_labels({}) is None and Owner.from_labels({LABEL["owner_host"]: "h", LABEL["owner_pid"]: "x"}) is None
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert Owner(me.host, dead.pid, "1").is_gone() and Owner(me.host, dead.pid, "").is_gone()
    assert Owner(me.host, me.pid, "not-my-start-time").is_gone()  # a reused pid is not the owner
    assert not Owner("another-host", dead.pid, "1").is_gone()  # cannot tell from here: kept


def test_ls_table_marks_orphans() -> None:
    listed = {
        "Id": "abc123def456",
        "Names": ["/comptrust-m-8080"],
        "State": "running",
        "Labels": {
            **OWNER.labels(),
            LABEL["name"]: "m",
            LABEL["engine"]: "vllm",
            LABEL["url"]: "http://127.0.0.1:8080",
        },
    }
    row = ManagedContainer.of(listed)
    assert row.container == "comptrust-m-8080" and row.matches("m") and row.matches("abc123") and not row.matches("ab")
    lines = _table([row]).splitlines()
    assert lines[0].split() == ["NAME", "ENGINE", "URL", "STATUS", "GPUS", "CHECKPOINT", "CONTAINER"]
    assert lines[1].split() == ["m", "vllm", "http://127.0.0.1:8080", "running", "-", "comptrust-m-8080"]


def test_docker_is_a_registered_launcher() -> None:
    assert "docker" in launcher_names() and get_launcher("docker").name == "docker"


def test_no_engine_is_a_one_line_error_naming_podman(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    assert engine_address() == f"unix://{tmp_path}/no.sock"
    reason = get_launcher("docker").unavailable_reason()
    assert reason is not None and f"no Docker engine answers at unix://{tmp_path}/no.sock" in reason
    assert "podman system service" in reason and "DOCKER_HOST" in reason
    for argv in (["ls"], ["stop", "--all"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("serve: error: no Docker engine answers") and err.count("\n") == 1
    out = tmp_path / "endpoints.json"
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    assert main(["--launcher", "docker", "--model", str(model), "--endpoints-out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "launcher 'docker' cannot run here" in err and err.count("\n") == 1 and not out.exists()


def test_stop_needs_names_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop"]) == 2
    assert "name the servers to stop" in capsys.readouterr().err


def test_the_watchdog_does_not_import_the_docker_launcher() -> None:
    """No import circle between the launcher and its watchdog: the reaper needs only the container removal."""
    code = (
        "import sys, comptrust_serve.launchers.reaper, comptrust_serve.launchers.removal; "
        "sys.exit('comptrust_serve.launchers.docker' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    source = (Path(__file__).parents[1] / "src/comptrust_serve/launchers/reaper.py").read_text()
    assert "launchers.docker" not in source
