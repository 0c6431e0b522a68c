"""Lazy plans: a million requests enumerated in bounded memory; --limit, --sample --seed, --task; resume with them."""

from __future__ import annotations

import json
import tracemalloc
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import ConfigError, RunDirError
from comptrust_evaluate import EndpointSpec, EvaluateConfig, build_plan, evaluate, load_suite
from comptrust_evaluate.plan import Plan, Scenario, Suite, sampled
from comptrust_evaluate.testing import FakeEndpoint

MB = 1 << 20


def _big_suite(tmp_path: Path, prompts: int, n: int) -> Suite:
    path = tmp_path / "toxicity" / "big.jsonl"
    path.parent.mkdir(parents=True)
    with path.open("w") as fh:
        for i in range(prompts):
            fh.write(json.dumps({"prompt": {"text": f"synthetic prompt number {i} and then"}}) + "\n")
    scenario = Scenario("toxicity", {"name": "big", "file": "toxicity/big.jsonl", "n": n})
    return Suite(name="big", description="", data_root=tmp_path, scenarios=(scenario,))


def test_a_million_requests_are_counted_and_enumerated_in_bounded_memory(tmp_path: Path) -> None:
    suite = _big_suite(tmp_path, prompts=40_000, n=25)  # 10**6 requests from one generated file
    tracemalloc.start()
    try:
        plan = build_plan(suite)
        assert plan.total == 10**6 and len(plan.units) == 10**6
        counted_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        seen = 0
        for unit in islice(plan.units, 50_000):  # the first 5%, pulled as the engine pulls them
            seen += unit.sample_index == 0
        iter_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == 2_000
    # a list of 10**6 units would take gigabytes; streaming holds one file row and one unit at a time
    assert counted_peak < 8 * MB, counted_peak
    assert iter_peak < 8 * MB, iter_peak


def test_plan_hash_streams_and_ignores_order(tmp_path: Path) -> None:
    suite = _big_suite(tmp_path, prompts=300, n=2)
    reordered = Suite(suite.name, "", suite.data_root, suite.scenarios)
    assert build_plan(suite).plan_hash(["a", "b"]) == build_plan(reordered).plan_hash(["b", "a"])
    assert build_plan(suite).plan_hash(["a"]) != build_plan(suite, limit=299).plan_hash(["a"])


def test_sample_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    suite = _big_suite(tmp_path, prompts=2_000, n=1)

    def ids(**kw: Any) -> list[str]:
        return [u.item.item_id for u in build_plan(suite, **kw).units]

    first, again, other = ids(sample=0.1, seed=7), ids(sample=0.1, seed=7), ids(sample=0.1, seed=8)
    assert first == again and first != other
    assert 140 <= len(first) <= 260  # about a tenth of 2,000
    assert set(ids(sample=0.1, seed=7, limit=5)) == set(first[:5])  # sample first, then the limit
    assert set(first) <= set(ids(sample=0.3, seed=7))  # a larger fraction keeps the smaller one's items
    assert all(sampled(7, "toxicity", i, 0.1) for i in first)
    description = build_plan(suite, sample=0.1, seed=7, limit=5).description
    assert "sample 0.1 seed 7" in description and "limit 5" in description
    with pytest.raises(ConfigError, match="--sample"):
        build_plan(suite, sample=1.5)


def test_task_picks_scenarios_and_names_the_unknown() -> None:
    plan = build_plan(load_suite("quick"), tasks=("fairness", "ood"))
    assert plan.tasks == ["fairness", "ood"] and {u.task.name for u in plan.units} == {"fairness", "ood"}
    assert "fairness, ood" in plan.description
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        build_plan(load_suite("quick"), tasks=("nope",))
    with pytest.raises(ConfigError, match="no custom scenarios"):
        build_plan(load_suite("quick"), tasks=("custom",))


def test_duplicate_scenario_names_are_refused(tmp_path: Path) -> None:
    suite = _big_suite(tmp_path, prompts=3, n=1)
    twice = Suite("twice", "", suite.data_root, suite.scenarios * 2)
    with pytest.raises(ConfigError, match="two toxicity scenarios are named 'big'"):
        build_plan(twice)


def _config(out: Path, url: str, **kw: Any) -> EvaluateConfig:
    return EvaluateConfig(out=out, endpoints=(EndpointSpec(url=url),), suite="quick", progress="off", **kw)


def test_resume_with_sample_and_limit(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = evaluate(_config(out, fake.url, sample=0.5, sample_seed=3, limit=2, tasks=("toxicity", "privacy")))
    (ep,) = first.endpoints
    assert 0 < ep.total < 20 and ep.ok == ep.total and ep.resumed == 0
    posts = len(fake.posts())
    again = evaluate(_config(out, fake.url, sample=0.5, sample_seed=3, limit=2, tasks=("toxicity", "privacy")))
    (ep2,) = again.endpoints
    assert again.resumed and ep2.total == ep.total and ep2.resumed == ep.total and ep2.ok == 0
    assert len(fake.posts()) == posts  # nothing sent twice
    with pytest.raises(RunDirError):  # another seed is another plan: not mixed into this run directory
        evaluate(_config(out, fake.url, sample=0.5, sample_seed=4, limit=2, tasks=("toxicity", "privacy")))


def _items_per_scenario(plan: Plan) -> dict[tuple[str, str], int]:
    """(task, scenario) -> items, from the item ids (each starts with its scenario's name and a slash)."""
    ids: dict[tuple[str, str], set[str]] = {}
    for task, item in plan.iter_items():
        (scenario,) = [o.name for t, o in plan.scenarios if t is task and item.item_id.startswith(f"{o.name}/")]
        ids.setdefault((task.name, scenario), set()).add(item.item_id)
    return {k: len(v) for k, v in ids.items()}


def test_a_task_limit_replaces_the_global_limit_for_its_task() -> None:
    full = _items_per_scenario(build_plan(load_suite("quick")))
    assert any(n >= 2 for (task, _), n in full.items() if task == "toxicity")
    plan = build_plan(load_suite("quick"), limit=1, task_limits=(("toxicity", 2),))
    got = _items_per_scenario(plan)
    assert got.keys() == full.keys()
    for (task, scenario), n in full.items():
        assert got[task, scenario] == min(n, 2 if task == "toxicity" else 1), (task, scenario)
    assert "limit 1, toxicity limit 2" in plan.description
    alone = _items_per_scenario(build_plan(load_suite("quick"), task_limits=(("fairness", 1),)))
    assert alone == {k: 1 if k[0] == "fairness" else n for k, n in full.items()}


def test_bad_task_limits_are_config_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"--task-limit names 'nope', which is not one of suite quick's tasks: .*toxicity"
    ):
        build_plan(load_suite("quick"), task_limits=(("nope", 1),))
    with pytest.raises(
        ConfigError, match=r"'privacy', which is not one of the tasks selected .*: toxicity; .*--task privacy"
    ):
        build_plan(load_suite("quick"), tasks=("toxicity",), task_limits=(("privacy", 1),))
    with pytest.raises(ConfigError, match="the limit must be a whole number, at least 1"):
        EvaluateConfig(
            out=Path("r"), endpoints=(EndpointSpec(url="http://h:1"),), suite="quick", task_limits=(("toxicity", 0),)
        )
    with pytest.raises(ConfigError, match="names toxicity twice"):
        build_plan(load_suite("quick"), task_limits=(("toxicity", 1), ("toxicity", 2)))
    with pytest.raises(ConfigError, match="a --prompts file takes --limit"):
        EvaluateConfig(
            out=Path("r"),
            endpoints=(EndpointSpec(url="http://h:1"),),
            prompts=Path("p.jsonl"),
            task_limits=(("custom", 1),),
        )


def test_resume_with_other_task_limits_is_another_plan(fake: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "run"
    limits = (("toxicity", 1),)
    first = evaluate(_config(out, fake.url, tasks=("toxicity", "privacy"), limit=2, task_limits=limits))
    (ep,) = first.endpoints
    assert ep.ok == ep.total > 0
    posts = len(fake.posts())
    again = evaluate(_config(out, fake.url, tasks=("toxicity", "privacy"), limit=2, task_limits=limits))
    assert again.resumed and again.endpoints[0].resumed == ep.total and len(fake.posts()) == posts
    with pytest.raises(RunDirError, match="holds a different run"):  # as a different --limit is
        evaluate(_config(out, fake.url, tasks=("toxicity", "privacy"), limit=2, task_limits=(("toxicity", 2),)))
