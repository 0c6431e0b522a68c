"""Checkpoint folders, the launcher registry, and the embedded launcher's child process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import comptrust_serve
import pytest
from comptrust_core import (
    CheckpointError,
    ConfigError,
    Endpoint,
    write_manifest,
)
from comptrust_serve import (
    Checkpoint,
    LaunchOptions,
    ServerHandle,
    ServerStartError,
    Startup,
    get_launcher,
    launch,
    launch_checkpoint,
    launcher_names,
    open_checkpoint,
    register_launcher,
    resolve_launcher,
)
from comptrust_serve.launchers import _REGISTRY
from comptrust_serve.testing import make_manifest, process_running, processes_naming

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def with_manifest(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt-folder"
    shutil.copytree(tiny_checkpoint, folder)
    write_manifest(folder, make_manifest("tiny-dense"))
    return folder


def test_checkpoint_names_come_from_flag_then_manifest_then_folder(tiny_checkpoint: Path, with_manifest: Path) -> None:
    plain = open_checkpoint(tiny_checkpoint)
    assert plain.name == "tiny-llama" and plain.manifest is None and plain.path.is_absolute()
    managed = open_checkpoint(with_manifest)
    assert managed.name == "tiny-dense" and managed.manifest is not None
    assert open_checkpoint(with_manifest, "mine").name == "mine"
    with pytest.raises(CheckpointError, match="endpoint name"):
        open_checkpoint(with_manifest, "a/b")


def test_incomplete_folders_are_refused_with_a_hint(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        open_checkpoint(tmp_path / "empty")
    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", bin_only)
    (bin_only / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"safe_serialization=True"):
        open_checkpoint(bin_only)


class _FakeHandle(ServerHandle):
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.stopped = False

    def is_alive(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        self.stopped = True


class _FakeLauncher:
    name: ClassVar[str] = "fake"

    def unavailable_reason(self) -> str | None:
        return None

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        url = comptrust_serve.url_for(options.host, port)
        return _FakeHandle(Endpoint(name=checkpoint.name, url=url, launcher=self.name, handle="fake"))


@pytest.fixture
def fake_launcher() -> Iterator[None]:
    register_launcher("fake")(_FakeLauncher)
    yield
    _REGISTRY.pop("fake", None)


def test_registry_lookup_auto_and_plugins(fake_launcher: None, tiny_checkpoint: Path) -> None:
    assert {"embedded", "fake"} <= set(launcher_names())
    assert get_launcher("embedded").name == "embedded"
    assert resolve_launcher("auto").name == "embedded"
    with pytest.raises(ConfigError, match="unknown launcher 'nope'"):
        get_launcher("nope")
    with launch(tiny_checkpoint, launcher="fake", host="0.0.0.0") as handle:
        assert handle.endpoint.url.startswith("http://127.0.0.1:")
        assert handle.endpoint.launcher == "fake"
    assert isinstance(handle, _FakeHandle) and handle.stopped


def test_a_busy_port_is_refused_before_anything_starts(fake_launcher: None, tiny_checkpoint: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="in use"):
            launch_checkpoint(open_checkpoint(tiny_checkpoint), "fake", LaunchOptions(port=port))


@pytest.mark.timeout(120)
def test_embedded_launcher_serves_in_a_child_and_stops_it(
    with_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "key-that-must-not-be-logged"
    with launch(
        with_manifest,
        api_key_env="COMPTRUST_TEST_KEY",
        env={"COMPTRUST_TEST_KEY": secret},
        log_dir=tmp_path / "logs",
        max_batch=4,
        startup_timeout_s=120,
    ) as handle:
        endpoint = handle.endpoint
        pid = int(endpoint.handle or 0)
        assert pid != os.getpid() and process_running(pid)
        assert (endpoint.name, endpoint.protocol, endpoint.launcher) == ("tiny-dense", "tgi", "embedded")
        assert endpoint.checkpoint == str(with_manifest.absolute())
        assert endpoint.manifest is not None and endpoint.manifest.name == "tiny-dense"
        assert endpoint.api_key_env == "COMPTRUST_TEST_KEY"
        assert endpoint.url.startswith("http://127.0.0.1:")
        assert comptrust_serve.probe(endpoint.url)
        body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 3}}).encode()
        request = urllib.request.Request(
            f"{endpoint.url}/generate",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"},
        )
        with _OPENER.open(request, timeout=30) as response:
            assert "generated_text" in json.loads(response.read())
        assert handle.is_alive()
    assert not handle.is_alive()
    assert not process_running(pid)
    assert handle.log_path is not None and handle.log_path.parent == tmp_path / "logs"
    log = handle.log_path.read_text()
    assert "serving tiny-dense" in log and secret not in log


def test_a_child_that_dies_early_is_reported_with_its_log_tail(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ServerStartError) as caught:
        launch(tiny_checkpoint, extra_args=("--no-such-flag",), log_dir=tmp_path)
    message = str(caught.value)
    assert "exited with code 2 while starting" in message
    assert "unrecognized arguments: --no-such-flag" in message


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to list processes")
def test_a_child_that_never_gets_healthy_is_stopped(tiny_checkpoint: Path, tmp_path: Path) -> None:
    marker = f"never-healthy-{os.getpid()}"
    with pytest.raises(ServerStartError, match="did not answer") as caught:
        launch(tiny_checkpoint, name=marker, startup_timeout_s=0.3, log_dir=tmp_path)
    assert "/health" in str(caught.value)
    assert len(list(tmp_path.glob("*.log"))) == 1
    assert processes_naming(marker) == []
