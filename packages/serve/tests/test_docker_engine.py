"""The docker launcher against a real container engine: podman's Docker API on a private socket and storage.

No image registry is reachable, so the session builds a small image from a static busybox whose entrypoint
(data/fake-engine/engine.sh) stands in for TGI's launcher: it takes the command line the launcher derives, serves
/health, and tells over HTTP what it was given. Everything else is the production path: ports, labels, mounts,
ulimits, the health wait, the log tail in errors, `serve ls`, `serve stop`, teardown on Ctrl-C and after a crash.
Where podman, runc or a static busybox is missing, or the engine cannot start, the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import ConfigError, read_endpoints
from comptrust_serve import LaunchOptions, ServerStartError, launch_checkpoint, open_checkpoint, probe
from comptrust_serve.cli import main
from comptrust_serve.launchers.containers import (
    LABEL,
    MANAGED,
    ULIMITS_ENV,
    Owner,
    container_spec,
    current_owner,
)
from comptrust_serve.launchers.docker import container_display_name, sweep_orphans
from comptrust_serve.testing import process_running, write_fake_checkpoint

IMAGE = "localhost/comptrust-fake-engine:test"
FAKE_ENGINE = Path(__file__).parent / "data" / "fake-engine"
CLI = [sys.executable, "-c", "import sys; from comptrust_serve.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class Engine:
    base_url: str
    client: Any  # docker.DockerClient

    def containers(self, **labels: str) -> list[dict[str, Any]]:
        """comptrust's containers with these labels, as the engine lists them (Id, Names, Labels, State)."""
        wanted = [f"{MANAGED}=true", *(f"{LABEL[k]}={v}" for k, v in labels.items())]
        found: list[dict[str, Any]] = self.client.api.containers(all=True, filters={"label": wanted})
        return found


def _static_busybox() -> Path | None:
    for candidate in ("/usr/bin/busybox", "/bin/busybox"):
        path = Path(candidate)
        # a dynamically linked ELF names its loader (ld-linux) near its start; a static one has none
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:8192]:
            return path
    return None


def _limits(pid: int) -> str:
    """nofile and nproc as the engine may grant them: its own hard limits (podman's defaults exceed them here)."""
    wanted = {"Max open files": "nofile", "Max processes": "nproc"}
    found = []
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        for prefix, name in wanted.items():
            if line.startswith(prefix):
                hard = line[len(prefix) :].split()[1]
                if hard.isdigit():
                    found.append(f"{name}={min(int(hard), 65536)}")
    return ",".join(found)


def _wait_for_socket(sock: Path, service: subprocess.Popen[bytes], log: Path) -> Any:
    import docker

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if service.poll() is not None:
            break
        if sock.exists():
            try:
                client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
                client.ping()
                return client
            except Exception:  # not answering yet
                pass
        time.sleep(0.2)
    tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
    service.kill()
    pytest.skip(f"podman system service did not answer on {sock}: {tail or 'no output'}")


@pytest.fixture(scope="module")
def engine_service() -> Iterator[tuple[Engine, str]]:
    """podman's Docker API (runc runtime, its own storage) on a temporary socket, and the fake engine image."""
    podman, runc, busybox = shutil.which("podman"), shutil.which("runc"), _static_busybox()
    if podman is None or runc is None or busybox is None:
        missing = [n for n, v in (("podman", podman), ("runc", runc), ("busybox-static", busybox)) if v is None]
        pytest.skip(f"no container engine to test against: {', '.join(missing)} missing (apt-get install them)")
    if os.geteuid() != 0:
        pytest.skip("the podman engine test runs as root (rootless podman needs user namespaces set up)")
    # podman refuses a runroot longer than 50 characters: pytest's own temporary folders (under xdist, popen-gwN/...)
    # can be longer, so the engine's state lives in a short folder of its own
    root = Path(tempfile.mkdtemp(prefix="ct-podman-", dir="/tmp" if os.path.isdir("/tmp") else None))
    sock, log = root / "docker.sock", root / "service.log"
    storage = ["--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
    argv = [podman, *storage, "--runtime", runc, "system", "service", "--time=0", f"unix://{sock}"]
    with log.open("wb") as out:
        service = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = _wait_for_socket(sock, service, log)
    try:
        context = root / "image"
        shutil.copytree(FAKE_ENGINE, context)
        shutil.copy(busybox, context / "busybox")
        try:
            client.images.build(path=str(context), dockerfile="Containerfile", tag=IMAGE, rm=True)
        except Exception as exc:
            pytest.skip(f"podman could not build the test image: {' '.join(str(exc).split())}")
        yield Engine(f"unix://{sock}", client), _limits(service.pid)
    finally:
        for container in client.api.containers(all=True):
            client.api.remove_container(container["Id"], force=True)
        client.close()
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def engine(engine_service: tuple[Engine, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The engine, with DOCKER_HOST and the container ulimits pointing at it; every test leaves no container."""
    found, limits = engine_service
    monkeypatch.setenv("DOCKER_HOST", found.base_url)
    monkeypatch.setenv(ULIMITS_ENV, limits)
    yield found
    left = found.containers()
    for container in left:
        found.client.api.remove_container(container["Id"], force=True)
    assert not left, f"containers left behind: {[c['Names'] for c in left]}"


def _checkpoint(folder: Path, *, quantize: str | None = None, marker: str | None = None) -> Path:
    write_fake_checkpoint(folder, quantize=quantize)
    if marker is not None:
        (folder / marker).write_text("weights are corrupt (planted by the test)")
    return folder


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``check()`` holds within ``timeout_s`` (the log is copied from the engine as it comes)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode()).strip()


def _options(**overrides: Any) -> LaunchOptions:
    return LaunchOptions(**{"image": IMAGE, "startup_timeout_s": 30.0, "stop_timeout_s": 5.0, **overrides})


def test_container_serves_on_its_mapped_port_with_labels_and_a_read_only_model(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_TEST_KEY", "s3cret")
    checkpoint = open_checkpoint(_checkpoint(tmp_path / "gptq-4bit", quantize="gptq"))
    options = _options(max_input_tokens=100, max_total_tokens=200, api_key_env="CT_TEST_KEY", log_dir=tmp_path)
    with launch_checkpoint(checkpoint, "docker", options) as handle:
        url = handle.endpoint.url
        port = int(url.rsplit(":", 1)[1])
        assert handle.endpoint.launcher == "docker" and handle.endpoint.protocol == "tgi"
        assert handle.endpoint.engine == "tgi"  # how it was served travels with the endpoint, into the runs
        assert handle.is_alive() and probe(url)
        args = _get(f"{url}/args").split()
        assert args[:2] == ["--model-id", "/comptrust/model"]
        for flag, value in (("--quantize", "gptq"), ("--max-input-tokens", "100"), ("--max-total-tokens", "200")):
            assert args[args.index(flag) + 1] == value
        assert _get(f"{url}/files").split() == ["comptrust.json", "config.json", "model.safetensors"]
        assert _get(f"{url}/mount") == "ro" and not (tmp_path / "gptq-4bit" / "written").exists()
        assert _get(f"{url}/apikey") == "set" and "s3cret" not in json.dumps(handle.endpoint.model_dump())
        limits = dict(item.split("=") for item in os.environ[ULIMITS_ENV].split(","))
        assert _get(f"{url}/nofile") == limits["nofile"]

        [container] = engine.containers(name="gptq-4bit")
        assert container["Id"] == handle.endpoint.handle
        binding = engine.client.api.inspect_container(container["Id"])["HostConfig"]["PortBindings"]["80/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) == port
        labels = container["Labels"]
        assert labels[LABEL["url"]] == url and labels[LABEL["engine"]] == "tgi"
        assert labels[LABEL["checkpoint"]] == str(checkpoint.path) and labels[LABEL["port"]] == str(port)
        assert Owner.from_labels(labels) is not None and not Owner.from_labels(labels).is_gone()  # type: ignore[union-attr]
        assert handle.log_path is not None and _eventually(lambda: "fake-engine: ready" in handle.log_tail())

        assert main(["ls"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:4] == ["NAME", "ENGINE", "URL", "STATUS"]
        assert table[1].split()[:4] == ["gptq-4bit", "tgi", url, "running"]

        assert main(["stop", "nope"]) == 2
        assert "no comptrust server named nope (running: gptq-4bit)" in capsys.readouterr().err
        assert handle.is_alive()
        assert main(["stop", "gptq-4bit"]) == 0
        assert capsys.readouterr().out.strip() == f"stopped comptrust-gptq-4bit-{port}"
        assert not engine.containers() and not handle.is_alive() and not probe(url)
    # leaving the with block stops it again: already gone is fine


def test_failing_container_reports_its_log_tail_and_is_removed(engine: Engine, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(_checkpoint(tmp_path / "broken", marker="FAIL"))
    with pytest.raises(ServerStartError) as caught:
        launch_checkpoint(checkpoint, "docker", _options())
    message = str(caught.value)
    assert "exited with code 3 while starting" in message
    assert "fake-engine: cannot load /comptrust/model: weights are corrupt" in message
    assert not engine.containers()


def test_health_wait_times_out_with_the_log_tail(engine: Engine, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(_checkpoint(tmp_path / "slow", marker="HANG"))
    with pytest.raises(ServerStartError) as caught:
        launch_checkpoint(checkpoint, "docker", _options(startup_timeout_s=2.0))
    message = str(caught.value)
    assert "did not answer" in message and "/health within 2 s" in message
    assert "fake-engine: loading forever" in message
    assert not engine.containers()


def test_missing_image_is_a_one_line_error(engine: Engine, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(_checkpoint(tmp_path / "m"))
    with pytest.raises(ConfigError, match="image localhost/comptrust-no-such-image:0 is not on the engine") as caught:
        launch_checkpoint(checkpoint, "docker", _options(image="localhost/comptrust-no-such-image:0"))
    assert "\n" not in str(caught.value)


def test_missing_image_stops_a_fleet_before_it_starts(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, image = tmp_path / "endpoints.json", "localhost/comptrust-no-such-image:0"
    argv = ["--launcher", "docker", "--image", image, "--endpoints-out", str(out)]
    for name in ("a", "b"):
        argv += ["--model", str(_checkpoint(tmp_path / name))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"serve: error: image {image} is not on the engine") and err.count("\n") == 1
    assert not out.exists() and not engine.containers()


def test_stop_all_and_orphan_sweep(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handles = [launch_checkpoint(open_checkpoint(_checkpoint(tmp_path / n)), "docker", _options()) for n in "ab"]
    # a container whose serve process is gone (a pid that has exited), as a crash that outran the watchdog leaves
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan_checkpoint = open_checkpoint(_checkpoint(tmp_path / "orphan"))
    owner = Owner(current_owner().host, dead.pid, "1")
    spec = container_spec(orphan_checkpoint, _options(), 1, owner=owner)
    engine.client.containers.create(**spec.create_kwargs())
    assert main(["ls"]) == 0
    assert "created (orphaned)" in capsys.readouterr().out
    assert sweep_orphans(engine.client) == [spec.name]
    assert sorted(c["Labels"][LABEL["name"]] for c in engine.containers()) == ["a", "b"]
    assert main(["stop", "--all"]) == 0
    assert not engine.containers() and not any(h.is_alive() for h in handles)
    for handle in handles:
        handle.stop()


def _start_cli(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "endpoints.json"
    model = _checkpoint(tmp_path / name)
    argv = [*CLI, "--launcher", "docker", "--image", IMAGE, "--model", str(model), "--endpoints-out", str(out)]
    process = subprocess.Popen(
        [*argv, "--log-dir", str(tmp_path / "logs"), "--startup-timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not out.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"serve did not come up:\n{process.communicate()[0].decode()}")
        time.sleep(0.1)
    return process, out


def _reapers(container_id: str) -> list[int]:
    """Pids of the watchdog processes minding ``container_id``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"comptrust_serve.launchers.reaper" in cmdline and container_id.encode() in cmdline:
                found.append(int(proc.name))
    return [pid for pid in found if process_running(pid)]


def test_serve_cli_ctrl_c_stops_and_removes_its_container(engine: Engine, tmp_path: Path) -> None:
    # SIGTERM takes the same path once the servers run (serve's _wait); while they start, see the test below
    process, out = _start_cli(tmp_path, "ctrl-c")
    [endpoint] = read_endpoints(out)
    assert endpoint.launcher == "docker" and probe(endpoint.url)
    [container] = engine.containers(name="ctrl-c")
    assert container["Id"] == endpoint.handle and container["State"] == "running"
    assert _reapers(container["Id"])
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert not engine.containers() and not probe(endpoint.url)
    assert not _reapers(container["Id"])


def test_killed_serve_leaves_no_orphan(engine: Engine, tmp_path: Path) -> None:
    process, out = _start_cli(tmp_path, "crash")
    [endpoint] = read_endpoints(out)
    [container] = engine.containers(name="crash")
    process.kill()  # no chance to clean up: the watchdog must
    process.wait()
    deadline = time.monotonic() + 30
    while (engine.containers(name="crash") or _reapers(container["Id"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not engine.containers(name="crash") and not probe(endpoint.url)
    assert not _reapers(container["Id"])


def test_name_taken_is_an_error_naming_serve_stop(engine: Engine, tmp_path: Path) -> None:
    checkpoint = open_checkpoint(_checkpoint(tmp_path / "twice"))
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    spec = container_spec(checkpoint, _options(), port, owner=current_owner())
    engine.client.containers.create(**spec.create_kwargs())  # a leftover of ours, not an orphan: its owner lives
    with pytest.raises(ServerStartError, match=f"refused to create {spec.name}: .*`serve stop {spec.name}`"):
        launch_checkpoint(checkpoint, "docker", _options(port=port))
    assert [container_display_name(c) for c in engine.containers()] == [spec.name]
    assert main(["stop", spec.name]) == 0


@pytest.mark.timeout(120)
def test_sigterm_while_starting_removes_the_half_started_container(engine: Engine, tmp_path: Path) -> None:
    out, model = tmp_path / "endpoints.json", _checkpoint(tmp_path / "starting", marker="HANG")
    argv = [*CLI, "--launcher", "docker", "--image", IMAGE, "--model", str(model), "--endpoints-out", str(out)]
    process = subprocess.Popen([*argv, "--startup-timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert _eventually(lambda: bool(engine.containers(name="starting")) or process.poll() is not None, 60)
    [container] = engine.containers(name="starting")
    assert _eventually(lambda: bool(_reapers(container["Id"])))
    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 130 and "serve: interrupted" in output, output
    assert not engine.containers() and not out.exists()
    assert _eventually(lambda: not _reapers(container["Id"]))  # told the container was dealt with: it just exits


def test_sigterm_while_a_fleet_starts_removes_every_container_before_serve_exits(
    engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "endpoints.json"
    argv = [*CLI, "--launcher", "docker", "--image", IMAGE, "--endpoints-out", str(out), "--startup-timeout", "600"]
    for name in ("hang-a", "hang-b"):
        argv += ["--model", str(_checkpoint(tmp_path / name, marker="HANG"))]  # running, never healthy
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def both_running() -> bool:
        running = [c for c in engine.containers() if c["State"] == "running"]
        return len(running) == 2 or process.poll() is not None

    assert _eventually(both_running, 60)
    ids = [c["Id"] for c in engine.containers()]
    assert len(ids) == 2 and _eventually(lambda: all(_reapers(i) for i in ids))
    process.terminate()
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 130 and "serve: interrupted" in output, output
    assert not engine.containers() and not out.exists()  # removed by serve itself, not left to the watchdogs
    assert _eventually(lambda: not any(_reapers(i) for i in ids))
