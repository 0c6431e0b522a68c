"""The sweep's scheduling with fake stages: N servers at once on their own GPUs, failures recorded, resume."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from comptrust_analysis import AnalysisConfig
from comptrust_analysis.report import Gate, gate_summary
from comptrust_compress import CompressConfig
from comptrust_core import (
    BackendInfo,
    BaseModelRef,
    CalibrationSpec,
    ConfigError,
    Endpoint,
    Manifest,
    MeasuredFacts,
    MethodSpec,
    Record,
    RequestSpec,
    RunDirError,
    StorageError,
    write_manifest,
)
from comptrust_evaluate import EndpointSpec, EndpointSummary, EvaluateConfig, RunSummary, evaluate_async
from comptrust_evaluate.testing import FakeEndpoint
from comptrust_serve import LaunchOptions, ServerHandle, ServerStartError

from comptrust.sweep.cli import main
from comptrust.sweep.estimate import DEFAULTS, VLLM_CPU_STARTUP_S, estimate, format_estimate
from comptrust.sweep.plan import EvaluatePlan, parse_plan
from comptrust.sweep.ray_executor import ClusterShape, NodeShape, cell_resources, format_placement
from comptrust.sweep.runner import run_sweep
from comptrust.sweep.stages import Stages, evaluate_config, launch_options, request_counts
from comptrust.sweep.state import load_state


class Crash(BaseException):
    """Stands in for a crash or Ctrl-C in the middle of an evaluation."""


class FakeServer(ServerHandle):
    def __init__(self, fakes: Fakes, name: str, gpus: tuple[int, ...]) -> None:
        self.fakes, self.gpus, self.alive = fakes, gpus, True
        self.endpoint = Endpoint(name=name, url=fakes.endpoint_url or f"http://127.0.0.1:{9000 + len(fakes.launched)}")

    def is_alive(self) -> bool:
        return self.alive

    def stop(self) -> None:
        with self.fakes.lock:
            if self.alive:
                self.alive = False
                self.fakes.running.remove(self)


@dataclass
class Fakes:
    """Fake compress/launch/evaluate/analyze that record what the runner asked of them."""

    methods: list[str] = field(default_factory=lambda: ["dense", "gptq", "magnitude"])
    fail_compress: set[str] = field(default_factory=set)
    fail_launch: set[str] = field(default_factory=set)
    crash_evaluate: set[str] = field(default_factory=set)
    stop_evaluate: set[str] = field(default_factory=set)  # the endpoint's breaker gives up after 2 of 5 requests
    crash_compress: set[str] = field(default_factory=set)
    full_disk: dict[str, str] = field(default_factory=dict)  # cell -> the stage whose write the disk refuses
    endpoint_url: str | None = None  # a real endpoint the fake servers stand for: then evaluate is the real one
    slow_launch: dict[str, threading.Event] = field(default_factory=dict)
    pair_up: bool = False  # evaluations wait for a partner: proves two servers run at once
    compressed: list[str] = field(default_factory=list)
    launched: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    configs: list[EvaluateConfig] = field(default_factory=list)
    analyzed: list[tuple[Path, ...]] = field(default_factory=list)
    gates: list[Gate | None] = field(default_factory=list)
    running: list[FakeServer] = field(default_factory=list)
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    barrier: asyncio.Barrier | None = None

    def compress(self, config: CompressConfig) -> Path:
        assert config.name is not None
        self.compressed.append(config.name)
        if config.name in self.crash_compress:
            raise Crash(config.name)
        if config.name in self.fail_compress:
            raise ConfigError(f"--bits {config.bits} cannot be done here")
        if self.full_disk.get(config.name) == "compress":
            raise StorageError(f"could not write the checkpoint to {config.out}: [Errno 28] No space left on device")
        config.out.mkdir(parents=True)
        calibration = (
            CalibrationSpec(source="comptrust:calibration.txt", samples=16, seqlen=128, seed=config.calib_seed)
            if config.calib_seed is not None
            else None
        )
        write_manifest(
            config.out,
            Manifest(
                name=config.name,
                base_model=BaseModelRef(source=config.model, kind="hub", content_hash="sha256:0"),
                method=MethodSpec(
                    name=config.method, bits=config.bits, group_size=config.group_size, pattern=config.pattern
                ),
                calibration=calibration,
                backend=BackendInfo(name="fake", version="0", device="cpu"),
                measured=MeasuredFacts(sparsity=0.0, effective_bits=16.0, wall_time_s=42.0),
                created_at="2026-01-01T00:00:00Z",
                comptrust_version="0",
            ),
        )
        return config.out

    def launch(self, ckpt: Path, launcher: str, options: LaunchOptions) -> ServerHandle:
        if ckpt.name in self.slow_launch:
            assert self.slow_launch[ckpt.name].wait(timeout=60), "the slow launch was never released"
        with self.lock:
            self.launched.append((ckpt.name, options.gpus))
            if ckpt.name in self.fail_launch:
                raise ServerStartError(f"{ckpt.name}: the server exited while starting")
            assert all(set(options.gpus).isdisjoint(s.gpus) for s in self.running), "two servers on one GPU"
            server = FakeServer(self, ckpt.name, options.gpus)
            self.running.append(server)
            self.most_at_once = max(self.most_at_once, len(self.running))
            return server

    async def evaluate(self, config: EvaluateConfig) -> RunSummary:
        name = config.endpoints[0].name
        assert name is not None
        assert any(s.endpoint.name == name and s.alive for s in self.running), "evaluated a server not running"
        if self.pair_up:
            if self.barrier is None:
                self.barrier = asyncio.Barrier(2)
            await asyncio.wait_for(self.barrier.wait(), timeout=60)
        if name in self.crash_evaluate:
            raise Crash(name)
        if self.full_disk.get(name) == "evaluate":
            raise StorageError(f"could not write records to {config.out}: [Errno 28] No space left on device")
        if self.endpoint_url is not None:
            self.evaluated.append(name)
            return await evaluate_async(config)
        # like evaluate's run folder: resumable by the same request selection only
        asked = config.out / "asked.txt"
        selection = repr((config.suite, config.limit, config.task_limits, config.tasks, config.sample))
        if asked.is_file() and asked.read_text() != selection:
            raise RunDirError(f"--out {config.out} holds a different run")
        self.evaluated.append(name)
        self.configs.append(config)
        config.out.mkdir(parents=True, exist_ok=True)
        asked.write_text(selection)
        summary = EndpointSummary(
            name=name, url="", protocol="tgi", total=5, resumed=0, ok=5, errors=0, refusals=0, elapsed_s=2.5
        )
        if name in self.stop_evaluate:
            summary = dataclasses.replace(summary, ok=2, left=3, stopped="no answer for 60s (HTTP 500: down)")
        return RunSummary(config.out, "run", "suite quick", False, (summary,))

    def analyze(self, config: AnalysisConfig) -> str:
        self.analyzed.append(config.run_dirs)
        self.gates.append(config.gate)
        if config.gate is not None:  # as analyze writes it: one failing cell
            deltas = pl.DataFrame(
                {
                    "label": ["gptq 4b"],
                    "base_model": ["org/model"],
                    "checkpoint": ["pooled"],
                    "perspective": ["ood"],
                    "delta": [-9.0],
                    "ci_low": [-12.0],
                    "ci_high": [-6.0],
                    "adj_low": [-12.5],
                    "adj_high": [-5.5],
                    "adj_level": [0.05],
                    "p_adj": [0.001],
                    "seeds": [2],
                    "verdict": ["drop"],
                    "ci_note": [None],
                }
            )
            config.out_dir().mkdir(parents=True, exist_ok=True)
            (config.out_dir() / "gate.json").write_text(json.dumps(config.gate.verdict(deltas)))
        return "report: " + " ".join(p.name for p in config.run_dirs)

    def stages(self) -> Stages:
        return Stages(
            compress=self.compress,
            launch=self.launch,
            evaluate=self.evaluate,
            analyze=self.analyze,
            methods=lambda: list(self.methods),
            check_launcher=False,
        )


def _plan(out: Path, gpus: str = "[]", extra: str = "", per_server: int = 1) -> str:
    return f"""
[study]
name = "fake"
out = "{out.as_posix()}"
[[models]]
name = "m"
source = "org/model"
[[methods]]
name = "dense"
[[methods]]
name = "gptq"
bits = [4, 8]
calib_seed = [0, 1]
[[methods]]
name = "magnitude"
pattern = "2:4"
{extra}
[serve]
launcher = "docker"
gpus = {gpus}
gpus_per_server = {per_server}
"""


NAMES = [
    "m-dense",
    "m-gptq-w4-seed0",
    "m-gptq-w4-seed1",
    "m-gptq-w8-seed0",
    "m-gptq-w8-seed1",
    "m-magnitude-2of4",
]


def test_two_gpus_serve_two_checkpoints_at_once_each_on_its_own_gpu(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", gpus="[0, 1]"))
    fakes = Fakes(pair_up=True)
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.compressed == NAMES
    assert sorted(fakes.evaluated) == sorted(NAMES)
    assert fakes.most_at_once == 2
    assert {gpus for _, gpus in fakes.launched} == {(0,), (1,)}
    assert fakes.running == []  # every server stopped
    assert result.failed == ()
    assert [p.name for p in fakes.analyzed[0]] == NAMES
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    assert all(state.cells[n].stage == "evaluated" and state.cells[n].ok == 5 for n in NAMES)
    assert state.cells["m-dense"].compress_s == 42.0 and state.cells["m-dense"].startup_s is not None


def test_without_gpus_one_server_at_a_time(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    fakes = Fakes()
    run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.most_at_once == 1 and len(fakes.evaluated) == len(NAMES)
    assert {gpus for _, gpus in fakes.launched} == {()}


def test_gpus_per_server_groups_the_gpus(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", gpus="[0, 1, 2, 3, 4]", per_server=2))
    assert plan.serve.slots() == [(0, 1), (2, 3)]
    fakes = Fakes(pair_up=True)
    run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert {gpus for _, gpus in fakes.launched} == {(0, 1), (2, 3)} and fakes.most_at_once == 2


def test_replicas_serve_one_checkpoint_from_several_servers_as_one_endpoint(tmp_path: Path) -> None:
    text = _plan(tmp_path / "out", gpus="[0, 1, 2, 3]")
    text = text.replace("gpus_per_server = 1", "gpus_per_server = 1\nreplicas = 2")
    plan = parse_plan(text)
    assert plan.serve.slots() == [(0, 1), (2, 3)]
    fakes = Fakes(pair_up=True)
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert result.failed == () and sorted(fakes.evaluated) == sorted(NAMES)
    assert len(fakes.launched) == 2 * len(NAMES)  # two servers per checkpoint
    assert {gpus for _, gpus in fakes.launched} == {(0,), (1,), (2,), (3,)} and fakes.most_at_once == 4
    for config in fakes.configs:
        (endpoint,) = config.endpoints  # one logical endpoint: one records file, one name
        assert len(endpoint.replicas) == 1 and endpoint.replicas[0] != endpoint.url
    assert fakes.running == []
    with pytest.raises(ConfigError, match="replicas = 3 servers of 1 GPU"):
        parse_plan(text.replace("replicas = 2", "replicas = 3").replace("[0, 1, 2, 3]", "[0, 1]"))


def test_failing_cells_are_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", gpus="[0, 1]"))
    fakes = Fakes(fail_compress={"m-gptq-w8-seed0"}, fail_launch={"m-magnitude-2of4"}, methods=["dense", "magnitude"])
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert set(result.failed) == {*(n for n in NAMES if "gptq" in n), "m-magnitude-2of4"}
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    gptq = state.cells["m-gptq-w4-seed0"]
    assert gptq.failed_stage == "compress" and "method 'gptq' is not registered in this installation" in (
        gptq.error or ""
    )
    mag = state.cells["m-magnitude-2of4"]
    assert mag.failed_stage == "serve" and "exited while starting" in (mag.error or "")
    assert fakes.evaluated == ["m-dense"] and [p.name for p in fakes.analyzed[0]] == ["m-dense"]
    assert fakes.running == []

    # gptq arrives in this install; the rerun retries only the failed cells
    fakes2 = Fakes(fail_compress={"m-gptq-w8-seed0"})
    result2 = run_sweep(plan, tmp_path / "plan.toml", fakes2.stages())
    assert "m-dense" not in fakes2.compressed and "m-dense" not in fakes2.evaluated
    assert sorted(fakes2.evaluated) == sorted(n for n in NAMES if n not in {"m-dense", "m-gptq-w8-seed0"})
    assert result2.failed == ("m-gptq-w8-seed0",)
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    assert state.cells["m-gptq-w8-seed0"].error == "--bits 8 cannot be done here"


def test_a_cell_whose_server_stops_answering_fails_at_evaluate_and_a_rerun_redoes_it(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    fakes = Fakes(stop_evaluate={"m-gptq-w8-seed0"})
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert result.failed == ("m-gptq-w8-seed0",)
    cell = load_state(tmp_path / "out", tmp_path / "plan.toml").cells["m-gptq-w8-seed0"]
    assert cell.failed_stage == "evaluate" and "stopped answering (no answer for 60s" in (cell.error or "")
    assert "3 requests left" in (cell.error or "")
    fakes2 = Fakes()
    assert run_sweep(plan, tmp_path / "plan.toml", fakes2.stages()).failed == ()
    assert fakes2.evaluated == ["m-gptq-w8-seed0"]


def test_a_crash_mid_evaluation_resumes_at_every_stage(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    fakes = Fakes(crash_evaluate={"m-gptq-w4-seed1"})
    with pytest.raises(Crash):
        run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.compressed == NAMES  # compression came first, for every cell
    assert fakes.evaluated == ["m-dense", "m-gptq-w4-seed0"]
    assert fakes.running == []  # the crashed cell's server was stopped on the way out
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    assert [state.cells[n].stage for n in NAMES] == ["evaluated", "evaluated"] + ["compressed"] * 4

    fakes2 = Fakes()
    result = run_sweep(plan, tmp_path / "plan.toml", fakes2.stages())
    assert fakes2.compressed == []  # every checkpoint's manifest matched
    assert fakes2.evaluated == NAMES[2:]
    assert result.failed == () and [p.name for p in fakes2.analyzed[0]] == NAMES

    # a third run finds everything done; changing what is asked of evaluate evaluates again
    fakes3 = Fakes()
    run_sweep(plan, tmp_path / "plan.toml", fakes3.stages())
    assert fakes3.compressed == [] and fakes3.evaluated == []
    changed = parse_plan(_plan(tmp_path / "out", extra="[evaluate]\nlimit = 1\n"))
    fakes4 = Fakes()
    result4 = run_sweep(changed, tmp_path / "plan.toml", fakes4.stages())
    assert fakes4.compressed == [] and fakes4.evaluated == NAMES and result4.failed == ()
    # the earlier run folders cannot take the new selection: each is kept aside whole, and the cell starts afresh
    for name in NAMES:
        (aside,) = (tmp_path / "out" / "runs").glob(f"{name}.superseded-*")
        assert "None" in (aside / "asked.txt").read_text()  # the first selection: no limit
        assert (tmp_path / "out" / "runs" / name / "asked.txt").read_text().startswith("('quick', 1,")
    # and the changed plan, run again, resumes its own folders: nothing more is set aside
    run_sweep(changed, tmp_path / "plan.toml", Fakes().stages())
    assert len(list((tmp_path / "out" / "runs").glob("*.superseded-*"))) == len(NAMES)


def test_a_checkpoint_that_does_not_match_is_not_overwritten(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    run_sweep(plan, tmp_path / "plan.toml", Fakes().stages())
    moved = parse_plan(_plan(tmp_path / "out").replace('source = "org/model"', 'source = "org/other"'))
    fakes = Fakes()
    result = run_sweep(moved, tmp_path / "plan.toml", fakes.stages())
    assert fakes.compressed == [] and set(result.failed) == set(NAMES)
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    assert "base model 'org/model' (the plan asks 'org/other')" in (state.cells["m-dense"].error or "")


def test_an_unknown_suite_stops_before_any_work(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", extra='[evaluate]\nsuite = "no-such-suite"\n'))
    fakes = Fakes()
    with pytest.raises(ConfigError, match="no-such-suite"):
        run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.compressed == [] and not (tmp_path / "out").exists()


def _record(name: str, finished_at: str, latency_s: float) -> str:
    return Record(
        key=name,
        endpoint="m-dense",
        endpoint_url="http://127.0.0.1:1",
        task="toxicity",
        perspective="toxicity",
        item_id=name,
        request=RequestSpec(prompt="hi"),
        protocol="tgi",
        template="none",
        status="ok",
        text="hello",
        latency_s=latency_s,
        attempts=1,
        finished_at=finished_at,
    ).model_dump_json()


def test_dry_run_estimate_uses_what_this_sweep_measured(tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = parse_plan(_plan(out))
    before = estimate(plan, load_state(out, tmp_path / "plan.toml"), ["dense", "gptq", "magnitude"])
    assert not any(measured for _, measured in before.compress_s.values())
    assert before.requests_per_s[1] is None and before.startup_s[1] is False
    assert "(measured)" not in format_estimate(
        plan, before
    ) and "0 measured from manifests, 6 assumed" in format_estimate(plan, before)

    run_sweep(plan, tmp_path / "plan.toml", Fakes().stages())
    records = out / "runs" / "m-dense" / "records" / "m-dense.ndjson"
    records.parent.mkdir(parents=True)
    # 2 requests from 00:00:00 (10 s before the first ended) to 00:00:20: 0.1 req/s
    records.write_text(
        _record("a", "2026-01-01T00:00:10.000000Z", 10.0)
        + "\n"
        + _record("b", "2026-01-01T00:00:20.000000Z", 5.0)
        + "\n"
    )
    more_seeds = parse_plan(_plan(out).replace("calib_seed = [0, 1]", "calib_seed = [0, 1, 2]"))
    est = estimate(more_seeds, load_state(out, tmp_path / "plan.toml"), ["dense", "gptq", "magnitude"])
    assert est.compress_s == {"m-gptq-w4-seed2": (42.0, True), "m-gptq-w8-seed2": (42.0, True)}
    assert est.to_evaluate == ["m-gptq-w4-seed2", "m-gptq-w8-seed2"]
    assert est.requests_per_s[0] == pytest.approx(0.1) and "1 earlier run(s), 2 requests" in (
        est.requests_per_s[1] or ""
    )
    assert est.startup_s[1] is True
    n = sum(est.requests.values()) if est.requests else 0
    assert est.evaluate_s == pytest.approx(2 * (est.startup_s[0] + n / 0.1))  # one server: one after the other
    text = format_estimate(more_seeds, est)
    assert "42s (measured)" in text and "2 measured from manifests, 0 assumed" in text


def test_a_dry_run_for_a_ray_cluster_places_the_cells_on_its_nodes(tmp_path: Path) -> None:
    """``sweep --dry-run --executor ray``: what a cell asks, what each node holds, where each cell would run."""
    text = _plan(tmp_path / "out").replace('name = "fake"', 'name = "fake"\nexecutor = "ray"\ndevice = "cuda"')
    plan = parse_plan(text.replace("gpus_per_server = 1", "gpus_per_server = 1\nreplicas = 2"))
    compress_res, serve_res = cell_resources(plan)
    assert (compress_res.gpus, serve_res.gpus) == (1.0, 2.0)  # on cuda: one GPU to compress, one per replica
    shape = ClusterShape(
        "10.0.0.1:6379",
        (NodeShape("a", cpus=16, gpus=4, memory_gb=128), NodeShape("b", cpus=16, gpus=2, memory_gb=128)),
    )
    assert (shape.slots(compress_res), shape.slots(serve_res)) == (6, 3)
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    one_at_a_time = estimate(plan, state, ["dense", "gptq", "magnitude"])
    on_cluster = estimate(plan, state, ["dense", "gptq", "magnitude"], cluster=shape)
    per_cell = next(iter(on_cluster.per_cell_s.values()))
    assert on_cluster.evaluate_s == pytest.approx(2 * per_cell)  # 6 cells on 3 slots
    assert one_at_a_time.evaluate_s == pytest.approx(6 * per_cell)
    assert on_cluster.compress_total_s == pytest.approx(max(s for s, _ in on_cluster.compress_s.values()))
    placement = format_placement(plan, shape, on_cluster)
    assert "a serve+evaluate cell asks 1 CPU, 2 GPU (2 servers of 1 GPU): 3 at once" in placement
    assert "node a: 16 CPU, 4 GPU, 128 GB -> 4 compression / 2 serve+evaluate cell(s) at once" in placement
    starts = [line for line in placement.splitlines() if line.startswith("    m-")]
    assert len(starts) == 6 and sum("from +0s" in line for line in starts) == 3  # three start at once
    assert "3 checkpoint(s) served at once on the Ray cluster at 10.0.0.1:6379" in format_estimate(plan, on_cluster)
    lonely = ClusterShape("x", (NodeShape("c", cpus=8, gpus=1, memory_gb=64),))
    assert "no node of the cluster holds a serve+evaluate cell" in " ".join(
        estimate(plan, state, ["dense", "gptq", "magnitude"], cluster=lonely).notes
    )


def test_a_fresh_estimate_assumes_each_methods_own_times(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    est = estimate(plan, load_state(tmp_path / "out", tmp_path / "plan.toml"), ["dense", "gptq", "magnitude"])
    cpu = DEFAULTS["cpu"]
    assert cpu.compress("dense") != cpu.compress("gptq") and cpu.rate("magnitude") != cpu.rate("gptq")
    assert est.compress_s == {c.name: (cpu.compress(c.method), False) for c in plan.cells()}
    assert est.rates == {c.name: cpu.rate(c.method) for c in plan.cells()}
    n = sum(est.requests.values()) if est.requests else 0
    assert n > 0
    assert est.evaluate_s == pytest.approx(sum(cpu.startup_s + n / cpu.rate(c.method) for c in plan.cells()))
    low, high = min(est.rates.values()), max(est.rates.values())
    assert f"at {low:.2f}-{high:.2f} req/s by method per server (assumed)" in format_estimate(plan, est)
    assert cpu.rate("no-such-method") == cpu.requests_per_s["*"] and cpu.compress("rtn") == cpu.compress_s["*"]
    text = _plan(tmp_path / "vllm").replace('launcher = "docker"', 'launcher = "process"') + 'engine = "vllm"\n'
    vllm = parse_plan(text)
    assert vllm.study.device == "cpu"  # vLLM's CPU build compiles at start-up: its own assumption, not the embedded one
    est = estimate(vllm, load_state(tmp_path / "vllm", tmp_path / "plan.toml"), ["dense", "gptq", "magnitude"])
    assert est.evaluate_s == pytest.approx(sum(VLLM_CPU_STARTUP_S + n / cpu.rate(c.method) for c in vllm.cells()))


def test_launch_options_carry_the_gpu_group_and_engine(tmp_path: Path) -> None:
    docker = parse_plan(_plan(tmp_path, gpus="[0, 1, 2, 3]", per_server=2) + 'engine = "vllm"\nimage = "img:1"\n')
    cell = docker.cells()[0]
    options = launch_options(docker, cell, (2, 3), tmp_path)
    assert (options.gpus, options.num_shard, options.engine, options.image) == ((2, 3), 2, "vllm", "img:1")
    assert "CUDA_VISIBLE_DEVICES" not in options.env
    embedded = parse_plan(_plan(tmp_path, gpus="[0, 1]").replace('launcher = "docker"', 'launcher = "embedded"'))
    options = launch_options(embedded, cell, (1,), tmp_path)
    assert options.env["CUDA_VISIBLE_DEVICES"] == "1" and options.num_shard is None
    assert launch_options(embedded, cell, (), tmp_path).env == {}
    flags = 'engine_args = ["--enforce-eager"]\nengine_command = ["/opt/vllm/bin/python", "-m", "x"]\n'
    process = parse_plan(_plan(tmp_path, gpus="[0]") + 'engine = "vllm"\n' + flags)
    options = launch_options(process, process.cells()[0], (), tmp_path)
    assert options.extra_args == ("--enforce-eager",) and options.engine_command == ("/opt/vllm/bin/python", "-m", "x")


def test_a_crash_mid_compression_keeps_what_was_made(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    fakes = Fakes(crash_compress={"m-gptq-w4-seed1"})
    with pytest.raises(Crash):
        run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.launched == []
    state = load_state(tmp_path / "out", tmp_path / "plan.toml")
    assert [state.cells[n].stage for n in NAMES] == ["compressed", "compressed"] + ["pending"] * 4
    fakes2 = Fakes()
    run_sweep(plan, tmp_path / "plan.toml", fakes2.stages())
    assert fakes2.compressed == NAMES[2:] and fakes2.evaluated == NAMES


def test_a_server_still_starting_when_the_sweep_stops_is_stopped_once_up(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", gpus="[0, 1]"))
    release = threading.Event()
    fakes = Fakes(crash_evaluate={"m-dense"}, slow_launch={"m-gptq-w4-seed0": release})
    timer = threading.Timer(0.5, release.set)  # the slow server comes up after the crash
    timer.start()
    try:
        with pytest.raises(Crash):
            run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    finally:
        release.set()
        timer.cancel()
    assert [name for name, _ in fakes.launched] == ["m-dense", "m-gptq-w4-seed0"]
    assert fakes.evaluated == [] and fakes.running == []


def test_a_launcher_that_cannot_run_here_stops_before_any_work(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out").replace('launcher = "docker"', 'launcher = "no-such-launcher"'))
    fakes = Fakes()
    with pytest.raises(ConfigError, match=r"serve\.launcher = 'no-such-launcher'"):
        run_sweep(plan, tmp_path / "plan.toml", dataclasses.replace(fakes.stages(), check_launcher=True))
    assert fakes.compressed == []
    est = estimate(plan, load_state(tmp_path / "out", tmp_path / "plan.toml"), ["dense"])
    assert any("no-such-launcher" in note for note in est.notes)


def test_status_shows_each_checkpoints_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _plan(tmp_path / "out", gpus="[0, 1]")
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(text)
    fakes = Fakes(fail_launch={"m-magnitude-2of4"})
    run_sweep(parse_plan(text), plan_file, fakes.stages())
    assert main(["status", str(plan_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    dense = next(line for line in lines if line.startswith("m-dense "))
    assert "evaluated ok=5 errors=0" in dense and "compress=42s" in dense and "evaluate=5req/2s" in dense
    assert "gpus=0" in dense or "gpus=1" in dense
    mag = next(line for line in lines if line.startswith("m-magnitude-2of4 "))
    assert "failed (serve: m-magnitude-2of4: the server exited while starting)" in mag
    assert lines[-1].startswith("5/6 evaluated, 1 failed")


# every [evaluate] key of a plan and the EvaluateConfig field it becomes: a new plan key fails the test below until
# it is forwarded and listed here
FORWARDED = {
    "suite": "suite",
    "tasks": "tasks",
    "limit": "limit",
    "limits": "task_limits",
    "sample": "sample",
    "sample_seed": "sample_seed",
    "dt_compat": "dt_compat",
    "data_dir": "data_dir",
    "max_concurrency": "max_concurrency",
    "rps": "rps",
    "toxicity_scorer": "toxicity_scorer",
    "toxicity_options": "toxicity_options",
    "refusal_detectors": "refusal_detectors",
}


def test_every_evaluate_key_reaches_evaluate_config(tmp_path: Path) -> None:
    assert set(EvaluatePlan.model_fields) == set(FORWARDED)
    packaged = Path(str(resources.files("comptrust_evaluate") / "data"))
    suite, data = packaged / "suites" / "quick.toml", packaged / "quick"
    extra = f'[evaluate]\nsuite = "{suite.as_posix()}"\ntasks = ["toxicity", "fairness"]\nlimit = 1\nsample = 0.9\n'
    extra += f'sample_seed = 3\ndt_compat = true\ndata_dir = "{data.as_posix()}"\nmax_concurrency = 4\nrps = 2.5\n'
    extra += 'toxicity_scorer = "hf"\nrefusal_detectors = ["classifier", "dt-toxicity"]\n'
    extra += "[evaluate.limits]\ntoxicity = 2\n"
    extra += '[evaluate.toxicity_options]\nmodel = "some/classifier"\nbatch_size = 8\n'
    expected = {
        "suite": str(suite),
        "tasks": ("toxicity", "fairness"),
        "limit": 1,
        "task_limits": (("toxicity", 2),),
        "sample": 0.9,
        "sample_seed": 3,
        "dt_compat": True,
        "data_dir": data,
        "max_concurrency": 4,
        "rps": 2.5,
        "toxicity_scorer": "hf",
        "toxicity_options": (("batch_size", "8"), ("model", "some/classifier")),
        "refusal_detectors": ("classifier", "dt-toxicity"),
    }
    assert set(expected) == set(FORWARDED.values())
    default = evaluate_config(parse_plan(_plan(tmp_path)), tmp_path / "run", EndpointSpec(url="http://127.0.0.1:1"))
    assert all(getattr(default, f) != v for f, v in expected.items())  # so that the checks below can fail
    assert default.retry_errors is True

    fakes = Fakes()
    result = run_sweep(parse_plan(_plan(tmp_path / "out", extra=extra)), tmp_path / "plan.toml", fakes.stages())
    assert result.failed == () and len(fakes.configs) == len(NAMES)
    for config in fakes.configs:
        assert {f: getattr(config, f) for f in expected} == expected


def test_the_plan_selection_reaches_evaluate_plan_building(tmp_path: Path) -> None:
    everything = request_counts(parse_plan(_plan(tmp_path)))
    assert everything["toxicity"] == 8 and everything["fairness"] > 1  # quick: 2 scenarios x 2 items x 2 samples
    limited = '[evaluate]\ntasks = ["toxicity", "fairness"]\nlimit = 1\n[evaluate.limits]\ntoxicity = 2\n'
    assert request_counts(parse_plan(_plan(tmp_path, extra=limited))) == {"toxicity": 8, "fairness": 2}  # 2 scenarios
    one = "[evaluate]\n[evaluate.limits]\ntoxicity = 1\n"
    assert request_counts(parse_plan(_plan(tmp_path, extra=one))) == {**everything, "toxicity": 4}
    sampled = request_counts(parse_plan(_plan(tmp_path, extra="[evaluate]\nsample = 0.3\nsample_seed = 1\n")))
    assert sum(sampled.values()) < sum(everything.values())
    unknown = parse_plan(_plan(tmp_path / "out", extra="[evaluate]\n[evaluate.limits]\nnope = 1\n"))
    fakes = Fakes()
    with pytest.raises(ConfigError, match="--task-limit names 'nope', which is not one of suite quick's tasks: "):
        run_sweep(unknown, tmp_path / "plan.toml", fakes.stages())
    assert fakes.compressed == [] and not (tmp_path / "out").exists()


def test_a_gate_table_in_the_plan_gates_the_sweep(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out", extra="[gate]\nmax_drop = 5\n"))
    fakes = Fakes()
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert fakes.gates == [Gate(5.0)]
    assert result.gate is not None and result.gate["passed"] is False
    assert gate_summary(result.gate) == ("gate max-drop=5: FAILED on 1 of 1 cells: gptq 4b ood (-9.0)", True)
    loose = parse_plan(_plan(tmp_path / "out2", extra="[gate]\nmax_drop = 10\n"))
    passed = run_sweep(loose, tmp_path / "plan2.toml", Fakes().stages()).gate
    assert passed is not None and passed["passed"] is True and passed["failing"] == [] and passed["checked"] == 1
    with pytest.raises(ConfigError, match="max_drop"):
        parse_plan(_plan(tmp_path / "out3", extra="[gate]\nmax_drop = -1\n"))
    assert run_sweep(parse_plan(_plan(tmp_path / "out4")), tmp_path / "p4.toml", Fakes().stages()).gate is None


def test_nothing_imports_ray_unless_the_executor_is_ray() -> None:
    """Ray is an optional extra (comptrust[ray]): the sweep's modules, the ray executor's included, import without it
    until a cluster is used."""
    import subprocess
    import sys

    code = (
        "import sys, comptrust.sweep.cli, comptrust.sweep.runner, comptrust.sweep.estimate, "
        "comptrust.sweep.ray_executor, comptrust.sweep.cells, comptrust.sweep.store; "
        "print(sorted(m for m in ('ray', 's3fs', 'moto') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_full_disk_stops_the_study_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One cell's write refused: that cell fails with the reason, no other cell starts (they would hit it too), no
    analysis is written, the sweep exits 4 in one line, `sweep status` shows it; a rerun once there is room ends it."""
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(_plan(tmp_path / "out"))
    fakes = Fakes(full_disk={"m-gptq-w4-seed1": "evaluate"})
    monkeypatch.setattr("comptrust.sweep.runner.real_stages", fakes.stages)
    assert main([str(plan_file)]) == 4
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("sweep: error:"))
    assert "the study stopped: [m-gptq-w4-seed1] evaluate: could not write records" in line
    assert "No space left on device" in line and "3 checkpoint(s) not done, no analysis written" in line
    assert fakes.evaluated == ["m-dense", "m-gptq-w4-seed0"] and fakes.analyzed == [] and fakes.running == []
    assert main(["status", str(plan_file)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"m-gptq-w4-seed1 +failed \(evaluate: could not write records", status)
    assert re.search(r"m-magnitude-2of4 +compressed", status)

    fakes.full_disk.clear()  # the space is back
    assert main([str(plan_file)]) == 0
    assert sorted(fakes.evaluated) == sorted(NAMES)  # the two done before are not done again
    assert len(fakes.analyzed) == 1


def test_a_full_disk_while_compressing_stops_before_serving(tmp_path: Path) -> None:
    plan = parse_plan(_plan(tmp_path / "out"))
    fakes = Fakes(full_disk={"m-gptq-w4-seed0": "compress"})
    result = run_sweep(plan, tmp_path / "plan.toml", fakes.stages())
    assert result.halted is not None and result.halted.startswith("[m-gptq-w4-seed0] compress: could not write")
    assert fakes.compressed == ["m-dense", "m-gptq-w4-seed0"] and fakes.launched == [] and fakes.analyzed == []
    assert result.failed == ("m-gptq-w4-seed0",)


@pytest.mark.timeout(300)
def test_the_quickstart_plan_on_a_disk_that_fills_during_evaluate(
    tmp_path: Path, small_fs: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quickstart plan, its output on a real small filesystem, records written by the real evaluate (the
    servers stand-ins): the disk fills in the middle of a cell, the sweep stops in one line with exit 4, every
    records file ends on a whole record; grown, the same command finishes with exactly one record per request."""
    fs = small_fs(0.25)
    monkeypatch.chdir(fs.path)  # the plan's outputs (sweeps/quickstart) are relative to it
    plan_file = Path(__file__).resolve().parents[1] / "examples" / "quickstart.toml"
    plan = parse_plan(plan_file.read_text())
    with FakeEndpoint() as endpoint:
        fakes = Fakes(methods=sorted({c.method for c in plan.cells()}), endpoint_url=endpoint.url)
        monkeypatch.setattr("comptrust.sweep.runner.real_stages", fakes.stages)
        assert main([str(plan_file)]) == 4
        line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("sweep: error:"))
        assert "evaluate: could not write records to " in line and "[Errno 28] No space left on device" in line
        assert f"filesystem {fs.path}" in line
        out = fs.path / "sweeps" / "quickstart"
        for records in (out / "runs").glob("*/records/*.ndjson"):
            data = records.read_bytes()
            assert not data or data.endswith(b"\n")
            for raw in records.read_text().splitlines():
                Record.model_validate_json(raw)
        assert 1 <= len(fakes.evaluated) < len(plan.cells())

        fs.grow(8)
        assert main([str(plan_file)]) == 0
    per_request = request_counts(plan)
    for cell in plan.cells():
        lines = (out / "runs" / cell.name / "records" / f"{cell.name}.ndjson").read_text().splitlines()
        keys = [json.loads(x)["key"] for x in lines]
        assert len(keys) == len(set(keys)) == sum(per_request.values())


def test_a_sweep_that_will_not_fit_says_so_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from comptrust_core.storage import Filesystem

    plan = parse_plan(_plan(tmp_path / "out"))
    monkeypatch.setattr("comptrust.sweep.disk.filesystem_of", lambda _: Filesystem("/tiny", 1000, 10**6))
    est = estimate(plan, load_state(tmp_path / "out", tmp_path / "plan.toml"), ["dense", "gptq", "magnitude"])
    assert est.disk is not None and est.disk.checkpoints is None  # "org/model" is not on this machine
    line = next(x for x in format_estimate(plan, est).splitlines() if x.startswith("disk: about"))
    assert "checkpoints unknown" in line and "a record estimated from the first request" in line
    assert line.endswith("filesystem /tiny: 1000 B free of 976.6 KiB: it will not fit")
    with caplog.at_level(logging.WARNING, logger="comptrust.sweep"):
        run_sweep(plan, tmp_path / "plan.toml", Fakes().stages())
    warned = [r.getMessage() for r in caplog.records if "this sweep still has to write about" in r.getMessage()]
    assert len(warned) == 1 and "filesystem /tiny" in warned[0]
