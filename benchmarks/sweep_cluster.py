"""A study on a local Ray cluster with 1 and with 2 worker nodes, side by side (issue 20, must 7).

    UV_PROJECT_ENVIRONMENT=.venv-ray uv sync --locked --extra ray --no-default-groups   # once: Ray's environment
    .venv-ray/bin/python benchmarks/sweep_cluster.py [--cells 6] [--delay 2.0] [--concurrency 2]

Each worker node carries one logical GPU and each serve+evaluate cell asks for one, so one node serves one checkpoint
at a time and two nodes serve two. The servers are latency-bound stand-ins (standin_engine.py, run by the real
``process`` launcher): every answer takes ``--delay`` seconds, so neither an engine nor this machine's cores set the
pace; the scheduler does. The checkpoints (the dense tiny model and magnitude-pruned copies) are made once before
timing and put in each study's store, so the driver finds them there and schedules no compression, as on a rerun.

Each study is ``python -m comptrust.sweep PLAN --address ADDR``, the user's command, in its own process. Printed:
the study's wall time, its throughput (requests of the whole study over its wall time: the driver's start, Ray's
scheduling, the servers' start-ups and the final analysis included), the serving throughput (the same requests over
the span from the first cell's server start to the last cell's end) and both ratios; the driver's
own CPU time per cell (rusage of its process); and the wall time beyond the cells' own work, per cell: the study's
wall time minus what the cells' measured start-up and evaluation would take on that many nodes, spread over the
cells (Ray's scheduling, worker start, the stores' reads and writes, the driver's loop).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from comptrust_core.cpu_dtype import cpu_summary

HERE = Path(__file__).resolve().parent


def _plan(tmp: Path, tiny: Path, store: Path, args: argparse.Namespace) -> Path:
    cells, delay, concurrency = args.cells, args.delay, args.concurrency
    sparsities = ", ".join(f"{0.1 * (i + 1):.1f}" for i in range(cells - 1))
    engine = json.dumps([sys.executable, str(HERE / "standin_engine.py"), "--delay", str(delay)])
    text = f"""
[study]
name = "cluster-bench"
out = "{(tmp / "out").as_posix()}"
executor = "ray"
store = "{store.as_posix()}"

[[models]]
name = "tiny"
source = "{tiny.as_posix()}"

[[methods]]
name = "dense"

[[methods]]
name = "magnitude"
sparsity = [{sparsities}]

[serve]
launcher = "process"
engine_command = {engine}

[evaluate]
suite = "quick"
max_concurrency = {concurrency}
toxicity_scorer = "none"

[analyze]
plots = false

[ray]
compress_cpus = 0.25
serve_cpus = 0.25
serve_gpus = 1
flush_records = 100
flush_seconds = 5
progress_seconds = 10
"""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "plan.toml"
    path.write_text(text)
    return path


def _precompress(plan_file: Path, seed_store: Path) -> None:
    from comptrust.sweep.cells import CellJob, compress_cell
    from comptrust.sweep.plan import load_plan
    from comptrust.sweep.stages import real_stages

    plan = load_plan(plan_file)
    for cell in plan.cells():
        outcome = compress_cell(CellJob(plan.model_dump_json(), cell.name, str(seed_store)), real_stages())
        assert outcome["ok"], outcome


def _study(nodes: int, tmp: Path, args: argparse.Namespace, tiny: Path, seed_store: Path) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    work = tmp / f"nodes{nodes}"
    store = work / "store"
    shutil.copytree(seed_store / "checkpoints", store / "checkpoints")
    plan = _plan(work, tiny, store, args)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "TQDM_DISABLE": "1"}
        log = work / "driver.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            driver = subprocess.Popen(
                [sys.executable, "-m", "comptrust.sweep", str(plan), "--address", cluster.address],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(driver.pid, 0)
        wall = time.monotonic() - started
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            print(log.read_text()[-5000:], file=sys.stderr)
            raise SystemExit(f"the {nodes}-node study failed (rc {rc})")
    finally:
        cluster.shutdown()
    outcomes = [json.loads(p.read_text()) for p in sorted((store / "cells").glob("*.json"))]
    requests = sum(o["requests"] for o in outcomes)
    cell_s = [o["startup_s"] + o["evaluate_s"] for o in outcomes]
    ideal = sum(cell_s) / nodes
    first_start = min(o["finished_at"] - s for o, s in zip(outcomes, cell_s, strict=True))
    serving_s = max(o["finished_at"] for o in outcomes) - first_start
    return {
        "nodes": nodes,
        "cells": len(outcomes),
        "requests": requests,
        "wall_s": wall,
        "throughput": requests / wall,
        "serving_throughput": requests / serving_s,
        "driver_cpu_per_cell_s": (usage.ru_utime + usage.ru_stime) / len(outcomes),
        "cell_s": sum(cell_s) / len(cell_s),
        "overhead_per_cell_s": (wall - ideal) / len(outcomes),
        "nodes_used": len({o["node"] for o in outcomes}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=6, help="checkpoints in the study (the dense one and N-1 pruned)")
    p.add_argument("--delay", type=float, default=2.0, help="seconds every answer takes")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight per checkpoint")
    args = p.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from comptrust_serve.testing import build_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="sweep-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        tiny = build_tiny_checkpoint(tmp / "tiny", max_positions=2048)
        seed = tmp / "seed-store"
        _precompress(_plan(tmp / "seed", tiny, seed, args), seed)
        results = [_study(n, tmp, args, tiny, seed) for n in (1, 2)]
    print(
        f"\n{args.cells} cells x quick suite, stand-in servers answering in {args.delay:g} s, "
        f"{args.concurrency} in flight per checkpoint; one logical GPU per worker node, one per cell\n"
    )
    header = (
        f"{'worker nodes':>12}  {'requests':>8}  {'wall':>7}  {'study req/s':>11}  {'serving req/s':>13}  "
        f"{'nodes used':>10}  "
        f"{'cell (own)':>10}  {'overhead/cell':>13}  {'driver CPU/cell':>15}"
    )
    print(header)
    for r in results:
        print(
            f"{r['nodes']:>12}  {r['requests']:>8}  {r['wall_s']:>6.1f}s  {r['throughput']:>11.2f}  "
            f"{r['serving_throughput']:>13.2f}  "
            f"{r['nodes_used']:>10}  {r['cell_s']:>9.1f}s  {r['overhead_per_cell_s']:>12.1f}s  "
            f"{r['driver_cpu_per_cell_s']:>14.2f}s"
        )
    study = results[1]["throughput"] / results[0]["throughput"]
    serving = results[1]["serving_throughput"] / results[0]["serving_throughput"]
    print(f"\nwith 2 nodes / with 1 node: study throughput {study:.2f}x, serving throughput {serving:.2f}x")


if __name__ == "__main__":
    main()
