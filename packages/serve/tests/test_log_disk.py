"""Server logs on a full disk: the servers start, serve and stop as usual (a log is a courtesy, never a reason to
fail), a fleet of them. Injected where the log is made and opened, and on a real full filesystem (root only)."""

from __future__ import annotations

import errno
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from comptrust_serve import LaunchOptions, launch_fleet, open_checkpoint
from comptrust_serve.launchers.process import log_path_for, read_tail, spawn

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _generate(url: str) -> str:
    body = json.dumps({"inputs": "hello", "parameters": {"max_new_tokens": 4}}).encode()
    request = urllib.request.Request(f"{url}/generate", body, {"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=60) as response:
        return str(json.loads(response.read())["generated_text"])


def test_no_room_for_a_log_file_means_no_log_not_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", full)
    assert log_path_for(tmp_path / "logs", "x", 1) == Path("/dev/null")
    assert read_tail(Path("/dev/null")) == "" and read_tail(Path("/dev/zero")) == ""  # a device is never read


def test_a_log_that_cannot_be_opened_does_not_stop_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = Path.open

    def refusing(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "server.log":
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing)
    child = spawn(["python3", "-c", "print('served')"], log_path=tmp_path / "server.log")
    assert child.wait(30) == 0


@pytest.mark.timeout(240)
def test_servers_with_their_logs_on_a_full_disk_serve_and_stop(
    tiny_checkpoint: Path, small_fs: Callable[[float], Any], tmp_path: Path
) -> None:
    fs = small_fs(0.5)
    logs = fs.path / "logs"
    logs.mkdir()
    fs.fill()  # the disk is full before the servers start
    second = tmp_path / "second"
    second.symlink_to(tiny_checkpoint, target_is_directory=True)
    checkpoints = [open_checkpoint(tiny_checkpoint, "a"), open_checkpoint(second, "b")]
    fleet = launch_fleet(checkpoints, "embedded", LaunchOptions(log_dir=logs, startup_timeout_s=180))
    try:
        assert not fleet.failures and len(fleet.handles) == 2
        for handle in fleet.handles:
            assert _generate(handle.endpoint.url) and handle.is_alive()
    finally:
        fleet.stop()
