"""GPU placement (pure functions) and fleets end to end: the process launcher with fake engines that exec the
embedded server, so each child really sees its CUDA_VISIBLE_DEVICES; a broken checkpoint among good ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from comptrust_core import ConfigError, Endpoint, read_endpoints
from comptrust_serve import (
    Checkpoint,
    LaunchOptions,
    ServerHandle,
    Startup,
    launch_fleet,
    open_checkpoint,
    parse_gpus,
    place,
    probe,
    url_for,
)
from comptrust_serve.placement import check_gpus_exist
from comptrust_serve.testing import fake_engine_report, install_fake_engines, process_running, processes_naming


def test_parse_gpus_lists_ranges_and_mistakes() -> None:
    assert parse_gpus("0,1,2,3") == (0, 1, 2, 3)
    assert parse_gpus("0-3") == (0, 1, 2, 3)
    assert parse_gpus(" 4, 0-1 ") == (4, 0, 1)
    for bad, message in (("a", "not a GPU index"), ("3-1", "not a GPU index"), ("0,0", "more than once")):
        with pytest.raises(ConfigError, match=message):
            parse_gpus(bad)
    with pytest.raises(ConfigError, match="negative"):
        parse_gpus("-1")


def test_place_gives_each_server_its_own_gpus() -> None:
    assert place(4, (0, 1, 2, 3)) == [(0,), (1,), (2,), (3,)]
    assert place(2, (0, 1, 2, 3)) == [(0,), (1,)]
    assert place(2, (4, 5, 6, 7), per_server=2) == [(4, 5), (6, 7)]
    assert place(1, (0, 1, 2), per_server=2) == [(0, 1)]
    assert place(3, ()) == [(), (), ()]
    slots = place(3, (7, 3, 5))
    assert sorted(g for slot in slots for g in slot) == [3, 5, 7]  # every GPU once, none shared


def test_place_refuses_more_servers_than_slots() -> None:
    with pytest.raises(ConfigError, match=r"5 checkpoints need 5 GPUs .* holds 4 server slot\(s\)"):
        place(5, (0, 1, 2, 3))
    with pytest.raises(ConfigError, match="at most 1 --model"):
        place(2, (0, 1, 2), per_server=2)
    with pytest.raises(ConfigError, match="needs 4 GPUs per server"):
        place(1, (0, 1), per_server=4)


def test_gpus_that_do_not_exist_are_named() -> None:
    check_gpus_exist((0, 1), (0, 1, 2))
    check_gpus_exist((9,), None)  # cannot tell without nvidia-smi
    with pytest.raises(ConfigError, match=r"GPU 7 does not exist here \(nvidia-smi lists: 0,1\)"):
        check_gpus_exist((0, 7), (0, 1))


@pytest.fixture
def fleet_models(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three checkpoints, the middle one broken (weights that do not load), and fake engines on PATH."""
    bin_dir = install_fake_engines(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    models = []
    for name in ("alpha", "broken", "gamma"):
        folder = tmp_path / f"fleet-{name}-{os.getpid()}"
        shutil.copytree(tiny_checkpoint, folder)
        if name == "broken":
            (folder / "model.safetensors").write_bytes(b"not a safetensors file")
        models.append(folder)
    return models


@pytest.mark.timeout(180)
def test_fleet_places_checkpoints_on_gpus_and_survives_a_failure(fleet_models: list[Path], tmp_path: Path) -> None:
    checkpoints = [open_checkpoint(m) for m in fleet_models]
    options = LaunchOptions(gpus=(0, 1, 2, 3, 4, 5), num_shard=2, log_dir=tmp_path / "logs", startup_timeout_s=120)
    with launch_fleet(checkpoints, "process", options) as fleet:
        assert [h.endpoint.name for h in fleet.handles] == [fleet_models[0].name, fleet_models[2].name]
        (failure,) = fleet.failures
        assert failure.name == fleet_models[1].name and failure.gpus == (2, 3)
        assert "cannot load" in failure.error
        seen = {}
        for handle in fleet.handles:
            assert handle.log_path is not None and probe(handle.endpoint.url)
            got = fake_engine_report(handle.log_path)
            seen[handle.endpoint.name] = got["CUDA_VISIBLE_DEVICES"]
            assert got["argv"][got["argv"].index("--num-shard") + 1] == "2"
        assert seen == {fleet_models[0].name: "0,1", fleet_models[2].name: "4,5"}
        assert len({h.endpoint.url for h in fleet.handles}) == 2
    assert not any(h.is_alive() for h in fleet.handles)
    for model in fleet_models:
        assert processes_naming(str(model)) == []


def test_too_many_checkpoints_for_the_gpus_start_nothing(fleet_models: list[Path], tmp_path: Path) -> None:
    checkpoints = [open_checkpoint(m) for m in fleet_models]
    with pytest.raises(ConfigError, match="server slot"):
        launch_fleet(checkpoints, "process", LaunchOptions(gpus=(0, 1), log_dir=tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LaunchOptions(engine="vllm", max_input_tokens=64), "vLLM has no separate input limit"),
        (LaunchOptions(dtype="float32"), "TGI takes --dtype float16 or bfloat16"),
        (LaunchOptions(max_total_tokens=0), "--max-total-tokens must be a positive"),
        (LaunchOptions(num_shard=0), "--num-shard must be at least 1"),
    ],
)
def test_engine_flags_that_cannot_work_start_nothing(
    fleet_models: list[Path], tmp_path: Path, options: LaunchOptions, message: str
) -> None:
    checkpoints = [open_checkpoint(m) for m in fleet_models]
    with pytest.raises(ConfigError, match=message):
        launch_fleet(checkpoints, "process", replace(options, log_dir=tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()


class _StartingHandle(ServerHandle):
    """A fake server that never answers /health on its own (nothing listens on its port)."""

    def __init__(self, name: str, port: int) -> None:
        self.endpoint = Endpoint(name=name, url=url_for("127.0.0.1", port), launcher="starting", handle=name)
        self.stops = 0

    def is_alive(self) -> bool:
        return self.stops == 0

    def stop(self) -> None:
        self.stops += 1


class _StartingLauncher:
    """Spawns a fake server per checkpoint and hands it over; those in ``up`` are healthy at once, the others wait for
    a health that never comes (the real health wait, which only the fleet's cancel ends); those in ``late`` spawn
    only once the fleet has been called off."""

    name: ClassVar[str] = "starting"

    def __init__(self, up: set[str], late: set[str], expected: int) -> None:
        self.up, self.late, self.expected = up, late, expected
        self.spawned: list[_StartingHandle] = []
        self.all_spawned = threading.Event()
        self.lock = threading.Lock()

    def unavailable_reason(self) -> str | None:
        return None

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        assert startup is not None
        while checkpoint.name in self.late and not startup.cancelled:
            startup.sleep(0.05)
        handle = _StartingHandle(checkpoint.name, port)
        with self.lock:
            self.spawned.append(handle)
            if len(self.spawned) == self.expected:
                self.all_spawned.set()
        startup.spawned(handle)
        if checkpoint.name not in self.up:
            handle.wait_healthy(options.startup_timeout_s, startup=startup)
        return handle


def _interrupt_main_when(ready: Callable[[], bool]) -> threading.Thread:
    """A thread that sends SIGINT to the main thread (as Ctrl-C does) once ``ready()``."""
    # Ignored SIGINT (inherited from a background launch) would be discarded and launch_fleet never interrupted; the
    # suite's conftest.py restores Python's handler. Fail here, not by hanging, if that ever stops holding.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "SIGINT must raise KeyboardInterrupt here"

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_while_the_fleet_starts_stops_every_spawned_server_without_waiting_for_health(
    tmp_path: Path,
) -> None:
    names = ["up", "starting-a", "starting-b", "late"]
    checkpoints = [Checkpoint(tmp_path / name, name) for name in names]
    launcher = _StartingLauncher(up={"up"}, late={"late"}, expected=3)
    interrupter = _interrupt_main_when(launcher.all_spawned.is_set)
    with pytest.raises(KeyboardInterrupt):
        launch_fleet(checkpoints, launcher, LaunchOptions(startup_timeout_s=3600))
    interrupter.join()
    assert sorted(h.endpoint.name for h in launcher.spawned) == sorted(names)  # "late" spawned after the interrupt
    assert [h.endpoint.name for h in launcher.spawned if h.stops == 0] == []
    # every start has ended: the health waits gave up instead of waiting an hour for health
    assert [t.name for t in threading.enumerate() if t.name.startswith("start-")] == []


def test_an_interrupt_while_process_servers_start_stops_them_before_launch_fleet_returns(
    fleet_models: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPTRUST_FAKE_ENGINE_DELAY_S", "600")  # the engines start, but never get healthy
    logs = tmp_path / "logs"
    good = [fleet_models[0], fleet_models[2]]

    def both_engines_started() -> bool:
        return logs.is_dir() and sum("FAKE-ENGINE" in p.read_text() for p in logs.glob("*.log")) == 2

    interrupter = _interrupt_main_when(both_engines_started)
    options = LaunchOptions(log_dir=logs, startup_timeout_s=3600)
    with pytest.raises(KeyboardInterrupt):
        launch_fleet([open_checkpoint(m) for m in good], "process", options)
    interrupter.join()
    assert both_engines_started()
    for model in good:  # no grace period: launch_fleet returns once the guards and engines are gone
        assert processes_naming(str(model)) == []


CLI = [sys.executable, "-c", "import sys; from comptrust_serve.cli import main; sys.exit(main())"]


@contextmanager
def serve_cli(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``serve`` with ``argv`` in a child process, killed at the end if a test left it running."""
    process = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(180)
def test_serve_cli_fleet_reports_the_failure_keeps_the_rest_and_stops_on_sigterm(
    fleet_models: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "endpoints.json"
    argv = ["--launcher", "process", "--engine", "tgi", "--gpus", "0-2", "--endpoints-out", str(out)]
    for model in fleet_models:
        argv += ["--model", str(model)]
    with serve_cli([*argv, "--log-dir", str(tmp_path / "logs")]) as process:
        deadline = time.monotonic() + 180
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert out.exists(), process.communicate(timeout=30)[0].decode() if process.poll() is not None else "timeout"
        endpoints = read_endpoints(out)
        assert [e.name for e in endpoints] == [fleet_models[0].name, fleet_models[2].name]
        assert all(e.launcher == "process" and probe(e.url) for e in endpoints)
        assert {e.engine for e in endpoints} == {"tgi"}  # how it was served travels with the endpoint
        pids = [pid for m in fleet_models for pid in processes_naming(str(m)) if pid != process.pid]
        assert len(pids) == 4  # a guard and an engine per healthy checkpoint
        logs = {fake_engine_report(p)["CUDA_VISIBLE_DEVICES"] for p in (tmp_path / "logs").glob("*.log")}
        assert logs == {"0", "1", "2"}  # the broken one got GPU 1 and logged it before failing
        process.send_signal(signal.SIGTERM)
        text = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 1, text  # one checkpoint failed
    assert f"serve: error: {fleet_models[1].name} on GPU 1 failed to start" in text
    assert [pid for pid in pids if process_running(pid)] == []
    assert json.loads(out.read_text())  # still the endpoints that served


def test_sigterm_while_the_fleet_starts_stops_everything_and_writes_nothing(
    fleet_models: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "endpoints.json"
    logs = tmp_path / "logs"
    argv = ["--launcher", "process", "--model", str(fleet_models[0]), "--model", str(fleet_models[2])]
    env = {**os.environ, "COMPTRUST_FAKE_ENGINE_DELAY_S": "600"}
    with serve_cli([*argv, "--endpoints-out", str(out), "--log-dir", str(logs)], env) as process:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            logs.is_dir() and sum("FAKE-ENGINE" in p.read_text() for p in logs.glob("*.log")) == 2
        ):
            time.sleep(0.2)
        pids = [pid for m in fleet_models for pid in processes_naming(str(m)) if pid != process.pid]
        assert len(pids) == 4  # both engines are starting (sleeping) under their guards
        process.send_signal(signal.SIGTERM)
        text = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 130, text
    assert not out.exists()
    assert [pid for pid in pids if process_running(pid)] == []  # serve stopped them before it exited


def test_a_gpu_that_nvidia_smi_does_not_list_is_a_one_line_error(
    fleet_models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_serve.cli import main

    monkeypatch.setenv("COMPTRUST_FAKE_GPUS", "0 1 2 3")
    out = tmp_path / "endpoints.json"
    argv = ["--launcher", "process", "--model", str(fleet_models[0]), "--gpus", "2,9"]
    code = main([*argv, "--endpoints-out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err == "serve: error: GPU 9 does not exist here (nvidia-smi lists: 0,1,2,3)\n"
    assert not out.exists() and processes_naming(str(fleet_models[0])) == []
