"""The cluster sweep on a real local Ray cluster: a head and two worker nodes carrying one logical GPU each, the
embedded server on the CPU as the engine, the quick suite on a tiny model (issue 20, musts 1, 3 and 5).

One cluster serves the whole module (about 10 s to start); each test runs ``python -m comptrust.sweep`` as the
driver in its own process, the way a user does, so a test can kill it. Cells ask for fractions of a CPU so that
two of them fit on this 2-core machine. Every test checks the store, not the driver's view: one record per request.
"""

from __future__ import annotations

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

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.slow

CELLS = ("tiny-dense", "tiny-magnitude-s0.5")


def _add_worker(c: Any) -> Any:
    """A worker node with one logical GPU (Ray's node start replaces this process's SIGTERM handler with its own,
    for the whole process: the one the process had is put back)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        return c.add_node(num_cpus=1, num_gpus=1)
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"  # the nodes run this environment, as on a real cluster
    c = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            _add_worker(c)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        os.environ.pop("RAY_ENABLE_UV_RUN_RUNTIME_ENV", None)


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


def _driver(plan: Path, address: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "TQDM_DISABLE": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "comptrust.sweep", str(plan), "--address", address],
            cwd=plan.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


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
    cluster: Any, tiny: Path, tmp_path: Path
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
        [sys.executable, "-m", "comptrust.sweep", str(plan), "--dry-run", "--address", cluster.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
    ).stdout
    assert "placement on the Ray cluster" in dry, dry
    assert "a serve+evaluate cell asks 0.25 CPU, 1 GPU: 2 at once" in dry, dry
    assert "tiny-no-such-method: " in dry  # the failed cell is still to evaluate, and placed


@pytest.mark.timeout(600)
def test_a_worker_node_lost_mid_cell_costs_only_its_unflushed_records(cluster: Any, tiny: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path, tiny, rps=4.0)  # 52 requests at 4/s: a cell evaluates for about 13 s
    log = tmp_path / "driver.log"
    driver = _driver(plan, cluster.address, log)
    try:
        cell, node_id = _wait_mid_cell(tmp_path, driver, log)
        (lost,) = [n for n in cluster.worker_nodes if n.node_id.startswith(node_id)]
        cluster.remove_node(lost, allow_graceful=False)  # the node dies: its worker, its server
        _add_worker(cluster)  # and a fresh one joins, as an autoscaler would
        rc = _finish(driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert rc == 0, log.read_text()[-4000:]
    for c in CELLS:
        _exactly_once(tmp_path, plan, c)
    outcome = _outcome(tmp_path, cell)
    assert outcome["resumed"] > 0, "the rerun resumed from the records the lost node had flushed"


@pytest.mark.timeout(600)
def test_a_killed_driver_resumes_the_study(cluster: Any, tiny: Path, tmp_path: Path) -> None:
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
