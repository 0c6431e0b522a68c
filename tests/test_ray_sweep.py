"""The cluster sweep on a real local Ray cluster: a head and two worker nodes carrying one logical GPU each, the
embedded server on the CPU as the engine, the quick suite on a tiny model (issue 20, musts 1, 3 and 5).

Ray runs from an environment of its own (``.venv-ray``, made by ``.ci/run``; the module skips, saying how to make it,
without one): its wheel installs a ``serve`` command that would replace comptrust's in the workspace's environment.
So the cluster runs in a helper process (tests/ray_cluster_helper.py, one for the whole module, about 10 s to start)
that this module drives, and each test runs ``python -m comptrust.sweep`` from that environment as the driver, the
way a user does, so a test can kill it. Cells ask for fractions of a CPU so that
two of them fit on this 2-core machine. Every test checks the store, not the driver's view: one record per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comptrust_evaluate import read_records
from comptrust_serve.testing import build_tiny_checkpoint

from comptrust.sweep.plan import parse_plan
from comptrust.sweep.stages import request_counts
from comptrust.sweep.store import StudyStore

pytestmark = pytest.mark.slow

CELLS = ("tiny-dense", "tiny-magnitude-s0.5")

ROOT = Path(__file__).resolve().parent.parent
RAY_ENV_HINT = "UV_PROJECT_ENVIRONMENT=.venv-ray uv sync --locked --extra ray --no-default-groups"


def _ray_python() -> Path | None:
    """The Ray environment's Python (Ray lives apart from the workspace's environment: its wheel's `serve` command
    would replace comptrust's), from COMPTRUST_RAY_PYTHON or ``.venv-ray``."""
    given = os.environ.get("COMPTRUST_RAY_PYTHON")
    python = Path(given) if given else ROOT / ".venv-ray" / "bin" / "python"
    return python if python.is_file() else None


RAY_PYTHON = _ray_python()
if RAY_PYTHON is None:
    pytest.skip(f"no Ray environment (.venv-ray); create it with `{RAY_ENV_HINT}`", allow_module_level=True)


class LocalCluster:
    """tests/ray_cluster_helper.py in the Ray environment: a head and two worker nodes with a logical GPU each."""

    def __init__(self) -> None:
        assert RAY_PYTHON is not None
        self.process = subprocess.Popen(
            [str(RAY_PYTHON), str(Path(__file__).parent / "ray_cluster_helper.py"), "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        hello = self._reply()
        self.address: str = hello["address"]
        self.workers: list[str] = hello["workers"]

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray cluster helper exited (rc {self.process.wait()})")
        return dict(json.loads(line))

    def _send(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._reply()

    def remove(self, node_id: str) -> None:
        """The node dies (its processes killed), and a fresh one joins, as an autoscaler would bring one."""
        self._send(f"remove {node_id}")
        self.workers.remove(node_id)
        self.workers.append(self._send("add")["node"])

    def drop(self, node_id: str) -> None:
        """The node dies and none replaces it."""
        self._send(f"remove {node_id}")
        self.workers.remove(node_id)

    def add(self, cache: Path | None = None) -> str:
        """A worker node joins; with ``cache``, its cells' scratch folder is there."""
        node = str(self._send(f"add {cache}" if cache else "add")["node"])
        self.workers.append(node)
        return node

    def close(self) -> None:
        with contextlib.suppress(OSError):  # "quit" has no answer: the helper shuts the cluster down and exits
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", max_positions=2048)


def _plan(tmp: Path, tiny: Path, *, extra_methods: str = "", rps: float | None = None) -> Path:
    text = f"""
[study]
name = "raytest"
out = "{(tmp / "out").as_posix()}"
executor = "ray"
store = "{(tmp / "store").as_posix()}"

[[models]]
name = "tiny"
source = "{tiny.as_posix()}"

[[methods]]
name = "dense"

[[methods]]
name = "magnitude"
sparsity = 0.5
{extra_methods}
[serve]
launcher = "embedded"
startup_timeout_s = 240

[evaluate]
suite = "quick"
max_concurrency = 4
{f"rps = {rps}" if rps else ""}

[analyze]
plots = false

[ray]
compress_cpus = 0.25
serve_cpus = 0.25
serve_gpus = 1
flush_records = 4
flush_seconds = 1
progress_seconds = 2
"""
    path = tmp / "plan.toml"
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "TQDM_DISABLE": "1"}


def _driver(plan: Path, address: str, log: Path) -> subprocess.Popen[bytes]:
    """``sweep PLAN --address ADDR`` run from the Ray environment, as a user runs it."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(RAY_PYTHON), "-m", "comptrust.sweep", str(plan), "--address", address],
            cwd=plan.parent,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def _running_driver(plan: Path, address: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`_driver`, killed on the way out if it is still running (a failed assertion, a timeout)."""
    driver = _driver(plan, address, log)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


def _finish(driver: subprocess.Popen[bytes], log: Path, timeout: float = 400) -> int:
    try:
        return driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        pytest.fail(f"the driver did not finish in {timeout:.0f}s; its log:\n{log.read_text()[-6000:]}")


def _exactly_once(tmp: Path, plan_file: Path, cell: str) -> int:
    """The store's records of ``cell``: one per request of the plan, none twice; their count."""
    plan = parse_plan(plan_file.read_text())
    expected = sum(request_counts(plan).values())
    run = StudyStore(str(tmp / "store")).materialize_run(cell, tmp / "check" / cell)
    records = [r for path in sorted((run / "records").glob("*.ndjson")) for r in read_records(path)]
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)), f"{cell}: {len(keys) - len(set(keys))} request(s) recorded twice"
    assert len(keys) == expected, f"{cell}: {len(keys)} records for {expected} requests"
    assert all(r.error is None for r in records), [r.error for r in records if r.error][:3]
    return len(keys)


def _outcome(tmp: Path, cell: str) -> dict[str, Any]:
    return dict(json.loads((tmp / "store" / "cells" / f"{cell}.json").read_text()))


def _wait_mid_cell(tmp: Path, driver: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> tuple[str, str]:
    """Wait until a cell has flushed records to the store and is not done; (the cell, its node's id prefix)."""
    deadline = time.monotonic() + timeout
    runs = tmp / "store" / "runs"
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"the driver ended (rc {driver.returncode}) before any cell was mid-way:\n{log.read_text()}")
        for cell in CELLS:
            chunks = list((runs / cell / "records").glob("*.chunks/*.ndjson"))
            attempt = runs / f"{cell}.attempt"
            if chunks and attempt.is_file() and not (tmp / "store" / "cells" / f"{cell}.json").exists():
                node = attempt.read_text().split()[1]
                return cell, node.rsplit(":", 1)[-1]
        time.sleep(0.2)
    pytest.fail(f"no cell flushed records within {timeout:.0f}s:\n{log.read_text()[-6000:]}")


@pytest.mark.timeout(600)
def test_the_quick_suite_runs_across_two_nodes_and_a_failing_cell_fails_alone(
    cluster: LocalCluster, tiny: Path, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, tiny, extra_methods='[[methods]]\nname = "no-such-method"\n')
    log = tmp_path / "driver.log"
    rc = _finish(_driver(plan, cluster.address, log), log)
    out = log.read_text()
    assert rc == 1, out[-4000:]  # one cell failed, the others evaluated
    for cell in CELLS:
        assert _exactly_once(tmp_path, plan, cell) == 52
        assert _outcome(tmp_path, cell)["stage"] == "evaluated"
    state = json.loads((tmp_path / "out" / "sweep-state.json").read_text())["cells"]
    assert state["tiny-no-such-method"]["stage"] == "failed"
    assert state["tiny-no-such-method"]["failed_stage"] == "compress"
    assert "no-such-method" in state["tiny-no-such-method"]["error"]
    assert {state[c]["stage"] for c in CELLS} == {"evaluated"}
    assert len({state[c]["node"] for c in CELLS}) == 2, "each node's one GPU served one checkpoint"
    assert (tmp_path / "store" / "logs" / "tiny-no-such-method" / "compress.log").is_file()
    assert (tmp_path / "out" / "analysis" / "scores.parquet").is_file()
    assert (tmp_path / "store" / "analysis" / "scores.parquet").is_file()
    assert "study: " in out and "req/s over the cluster" in out  # the study's progress view
    status = subprocess.run(
        [sys.executable, "-m", "comptrust.sweep", "status", str(plan)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tiny-no-such-method  failed (compress:" in status and "log=" in status
    assert "2/3 evaluated, 1 failed" in status
    dry = subprocess.run(
        [str(RAY_PYTHON), "-m", "comptrust.sweep", str(plan), "--dry-run", "--address", cluster.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout
    assert "placement on the Ray cluster" in dry, dry
    assert "a serve+evaluate cell asks 0.25 CPU, 1 GPU: 2 at once" in dry, dry
    assert "tiny-no-such-method: " in dry  # the failed cell is still to evaluate, and placed


@pytest.mark.timeout(600)
def test_a_worker_node_lost_mid_cell_costs_only_its_unflushed_records(
    cluster: LocalCluster, tiny: Path, tmp_path: Path
) -> None:
    plan = _plan(tmp_path, tiny, rps=4.0)  # 52 requests at 4/s: a cell evaluates for about 13 s
    log = tmp_path / "driver.log"
    with _running_driver(plan, cluster.address, log) as driver:
        cell, node_id = _wait_mid_cell(tmp_path, driver, log)
        (lost,) = [n for n in cluster.workers if n.startswith(node_id)]
        cluster.remove(lost)  # the node dies, its worker and its server with it
        rc = _finish(driver, log)
    assert rc == 0, log.read_text()[-4000:]
    for c in CELLS:
        _exactly_once(tmp_path, plan, c)
    outcome = _outcome(tmp_path, cell)
    assert outcome["resumed"] > 0, "the rerun resumed from the records the lost node had flushed"


@pytest.mark.timeout(600)
def test_a_killed_driver_resumes_the_study(cluster: LocalCluster, tiny: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, tiny, rps=4.0)
    log = tmp_path / "driver.log"
    first = _driver(plan, cluster.address, log)
    try:
        cell, _ = _wait_mid_cell(tmp_path, first, log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver dies; Ray ends its tasks
        first.wait()
    flushed = len(list((tmp_path / "store" / "runs" / cell / "records").glob("*.chunks/*.ndjson")))
    assert flushed >= 1
    rc = _finish(_driver(plan, cluster.address, log), log)
    assert rc == 0, log.read_text()[-4000:]
    for c in CELLS:
        _exactly_once(tmp_path, plan, c)
    assert _outcome(tmp_path, cell)["resumed"] > 0, "the cell resumed from what it had flushed"
    # and a third run finds the study done: every cell is skipped, nothing is sent again
    rc = _finish(_driver(plan, cluster.address, log), log)
    assert rc == 0
    assert log.read_text().count("already evaluated; skipping") >= 2


@pytest.mark.timeout(600)
def test_a_worker_whose_disk_is_full_hands_its_cells_to_another_node(
    cluster: LocalCluster, tiny: Path, tmp_path: Path, small_fs: Any
) -> None:
    """The only node with a GPU has its own disk full: each cell's serve task fails there on a refused write and is
    run again elsewhere (that node excluded), not failed; once a node with room joins, the study ends exactly."""
    fs = small_fs(0.25)
    fs.fill()
    for node in list(cluster.workers):
        cluster.drop(node)
    full = cluster.add(cache=fs.path)
    plan = _plan(tmp_path, tiny)
    log = tmp_path / "driver.log"
    with _running_driver(plan, cluster.address, log) as driver:
        deadline = time.monotonic() + 300
        while "running it again on another node" not in log.read_text():
            assert driver.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        good = cluster.add()  # a node with room joins: the moved cells run there
        rc = _finish(driver, log)
    assert rc == 0, log.read_text()[-4000:]
    for cell in CELLS:
        assert _exactly_once(tmp_path, plan, cell) == 52
        assert _outcome(tmp_path, cell)["node"].endswith(good[:8])
    assert "No space left on device" in log.read_text()
    cluster.drop(full)  # the module's cluster as it was: two worker nodes with room
    cluster.add()


_LIBRARY_USE = """
import sys
from pathlib import Path

import ray

from comptrust.sweep.plan import load_plan
from comptrust.sweep.runner import run_sweep

ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING")
plan_file = Path(sys.argv[1])
result = run_sweep(load_plan(plan_file), plan_file)  # executor = "ray" in the plan: joins the Ray already up
sys.exit(1 if result.failed else 0)
"""


@pytest.mark.timeout(600)
def test_from_python_on_a_local_ray_with_two_gpus_a_checkpoint_served_by_two_replicas(
    tiny: Path, tmp_path: Path
) -> None:
    """``ray.init(num_cpus=2, num_gpus=2)`` then ``run_sweep``: the plan's ``replicas = 2`` give the one cell both
    logical GPUs and two embedded servers, one per GPU, and its requests are spread over both."""
    text = _plan(tmp_path, tiny).read_text()
    text = text.replace('[[methods]]\nname = "magnitude"\nsparsity = 0.5\n', "")
    text = text.replace("startup_timeout_s = 240", "startup_timeout_s = 240\nreplicas = 2")
    plan = tmp_path / "plan.toml"
    plan.write_text(text.replace("serve_gpus = 1", "serve_gpus = 2"))
    done = subprocess.run(
        [str(RAY_PYTHON), "-c", _LIBRARY_USE, str(plan)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert _exactly_once(tmp_path, plan, "tiny-dense") == 52
    run = tmp_path / "out" / "runs" / "tiny-dense"
    records = [r for p in sorted((run / "records").glob("*.ndjson")) for r in read_records(p)]
    served = {r.endpoint_url for r in records}
    assert len(served) == 2, f"both replicas answered: {served}"
    assert {r.endpoint for r in records} == {"tiny-dense"}  # one logical endpoint
    assert _outcome(tmp_path, "tiny-dense")["gpus"] == [0, 1]
