"""What a run asks for: suites (scenarios of tasks over a data folder), expanded into one unit per request."""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError, RequestSpec, record_key

from comptrust_evaluate.tasks import DataSource, Item, Task, derive_seed, get_task

__all__ = ["Plan", "Scenario", "Suite", "Unit", "build_plan", "load_suite", "prompts_suite", "suite_names"]


@dataclass(frozen=True)
class Scenario:
    task: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    data_root: Path
    scenarios: tuple[Scenario, ...]


@dataclass(frozen=True)
class Unit:
    """One request to send to every endpoint: a sample of an item, with its seed filled in."""

    task: Task[Any, Any]
    item: Item[Any]
    sample_index: int
    request: RequestSpec

    @property
    def fingerprint(self) -> str:
        return record_key("", self.task.name, self.item.item_id, self.sample_index, self.request)


@dataclass(frozen=True)
class Plan:
    description: str
    units: tuple[Unit, ...]

    @property
    def tasks(self) -> list[str]:
        return sorted({u.task.name for u in self.units})

    def plan_hash(self, endpoint_names: list[str]) -> str:
        """Equal for the same endpoints asked the same requests, whatever the order or the servers' URLs."""
        digest = hashlib.sha256()
        digest.update(json.dumps(sorted(endpoint_names)).encode())
        for fingerprint in sorted(u.fingerprint for u in self.units):
            digest.update(fingerprint.encode())
        return "sha256:" + digest.hexdigest()


def _packaged_suites() -> Path:
    return Path(str(resources.files("comptrust_evaluate") / "data" / "suites"))


def suite_names() -> list[str]:
    return sorted(p.stem for p in _packaged_suites().glob("*.toml"))


def load_suite(name: str, data_dir: Path | None = None) -> Suite:
    """A packaged suite by name (e.g. ``quick``) or a suite TOML file; ``data_dir`` replaces its data folder."""
    path = Path(name)
    if not (name.endswith(".toml") or path.is_file()):
        path = _packaged_suites() / f"{name}.toml"
        if not path.is_file():
            raise ConfigError(
                f"unknown suite {name!r}; packaged suites: {', '.join(suite_names())}, or pass a .toml file"
            )
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"suite file {path} is not valid TOML: {exc}") from None
    scenarios = []
    for i, entry in enumerate(doc.get("scenario", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("task"), str):
            raise ConfigError(f"suite {path}: scenario #{i + 1} needs a 'task'")
        options = {k: v for k, v in entry.items() if k != "task"}
        scenarios.append(Scenario(task=entry["task"], options=options))
    if not scenarios:
        raise ConfigError(f"suite {path} has no [[scenario]] entries")
    root = data_dir if data_dir is not None else (path.parent / str(doc.get("data", "."))).resolve()
    return Suite(
        name=path.stem if name.endswith(".toml") else name,
        description=str(doc.get("description", "")),
        data_root=root,
        scenarios=tuple(scenarios),
    )


def prompts_suite(prompts: Path) -> Suite:
    """A one-scenario suite running the ``custom`` task over a prompts file."""
    prompts = prompts.resolve()
    scenario = Scenario(task="custom", options={"name": "custom", "file": prompts.name})
    return Suite(name=f"prompts {prompts.name}", description="", data_root=prompts.parent, scenarios=(scenario,))


def _with_seed(task: str, item: Item[Any], sample_index: int) -> RequestSpec:
    params = item.request.params
    seed = params.seed + sample_index if params.seed is not None else derive_seed(task, item.item_id, sample_index)
    return item.request.model_copy(update={"params": params.model_copy(update={"seed": seed})})


def build_plan(suite: Suite, limit: int | None = None, description: str | None = None) -> Plan:
    """Every scenario's items (at most ``limit`` per scenario, and at most its own ``limit``), ``n`` samples each."""
    data = DataSource(suite.data_root)
    units: list[Unit] = []
    seen: set[tuple[str, str]] = set()
    for scenario in suite.scenarios:
        task = get_task(scenario.task)
        options = task.parse_options(scenario.options)
        caps = [c for c in (limit, options.limit) if c is not None]
        items = task.items(data, options)
        for item in itertools.islice(items, min(caps)) if caps else items:
            if (task.name, item.item_id) in seen:
                raise ConfigError(f"suite {suite.name}: item id {item.item_id!r} of task {task.name} appears twice")
            seen.add((task.name, item.item_id))
            for sample in range(item.n):
                units.append(
                    Unit(task=task, item=item, sample_index=sample, request=_with_seed(task.name, item, sample))
                )
    if not units:
        raise ConfigError(f"suite {suite.name} asks for no requests")
    return Plan(description=description or f"suite {suite.name}", units=tuple(units))
