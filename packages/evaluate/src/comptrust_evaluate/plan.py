"""What a run asks for: suites (scenarios of tasks over a data folder), expanded lazily into one unit per request.

A plan never holds its units: :attr:`Plan.units` enumerates them afresh from the data files on each pass, so the
full DecodingTrust configuration (about a million requests per model) costs the memory of one scenario's file, not
of a million requests. The total is counted by one streaming pass too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import comptrust_core.record as _core
from comptrust_core import ConfigError, RequestSpec, record_key

from comptrust_evaluate.config import check_task_limits
from comptrust_evaluate.data_files import resolve_data
from comptrust_evaluate.dt_compat import to_llama2_request
from comptrust_evaluate.tasks import DataSource, Item, ScenarioOptions, Task, derive_seed, get_task, task_names

__all__ = [
    "HF_DATA",
    "Plan",
    "Scenario",
    "Selection",
    "Suite",
    "Unit",
    "Units",
    "WorkItems",
    "build_plan",
    "load_suite",
    "parse_scenarios",
    "prompts_suite",
    "sampled",
    "suite_names",
]

HF_DATA = "hf:AI-Secure/DecodingTrust"
"""A suite's ``data`` value meaning: DecodingTrust's data, from ``--data-dir`` or the Hugging Face dataset."""


@dataclass(frozen=True)
class Scenario:
    task: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    data_root: Path | None  # None: the suite reads DecodingTrust's data (--data-dir, or the HF dataset)
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


class WorkItems(Protocol):
    """What the engine takes per endpoint: pending (unit, record key) pairs, iterable, with their count."""

    def __iter__(self) -> Iterator[tuple[Unit, str]]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Selection:
    """How much of each scenario to run: a deterministic ``sample`` fraction of its items (by ``seed``), then at most
    ``limit`` of those; a task named in ``task_limits`` takes its own limit instead of ``limit``."""

    limit: int | None = None
    sample: float | None = None
    seed: int = 0
    task_limits: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.sample is not None and not 0.0 < self.sample <= 1.0:
            raise ConfigError(f"--sample must be a fraction in (0, 1], got {self.sample}")
        check_task_limits(self.task_limits)

    def limit_for(self, task: str) -> int | None:
        """The items per scenario ``task`` may run (before the scenario's own ``limit``): its task limit, or
        ``limit``."""
        return dict(self.task_limits).get(task, self.limit)

    def describe(self) -> str:
        parts = []
        if self.sample is not None:
            parts.append(f"sample {self.sample:g} seed {self.seed}")
        if self.limit is not None:
            parts.append(f"limit {self.limit}")
        parts += [f"{task} limit {n}" for task, n in self.task_limits]
        return ", ".join(parts)


def sampled(seed: int, task: str, item_id: str, fraction: float) -> bool:
    """Whether an item is in the ``fraction`` sample drawn with ``seed``: a hash of the three, so the same items are
    chosen in every process and every rerun, whatever the order of enumeration."""
    digest = hashlib.sha256(f"{seed}\x00{task}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


_REQUEST_JSON = RequestSpec.__pydantic_serializer__  # bytes of model_dump_json, without the str in between


def _with_seed(task: str, item: Item[Any], sample_index: int) -> RequestSpec:
    """The item's request with this sample's seed: an unvalidated copy of already-validated parts (``model_copy``
    with ``update``; a validated copy per request would dominate the cost of enumerating a million-request plan)."""
    request, params = item.request, item.request.params
    seed = params.seed + sample_index if params.seed is not None else derive_seed(task, item.item_id, sample_index)
    return request.model_copy(update={"params": params.model_copy(update={"seed": seed})})


@dataclass(frozen=True)
class Units:
    """The plan's units, enumerated afresh on every iteration; ``len`` counts them by one streaming pass (cached)."""

    plan: Plan

    def __iter__(self) -> Iterator[Unit]:
        return self.plan.iter_units()

    def __len__(self) -> int:
        return self.plan.total


@dataclass(frozen=True)
class Plan:
    description: str
    data: DataSource
    scenarios: tuple[tuple[Task[Any, Any], ScenarioOptions], ...]
    selection: Selection = Selection()
    dt_compat: bool = False

    @property
    def tasks(self) -> list[str]:
        return sorted({t.name for t, _ in self.scenarios})

    @property
    def prompt_format(self) -> str:
        """How requests are sent: chat messages through the server's template, or DecodingTrust's Llama-2 strings."""
        return "dt-compat (DecodingTrust's Llama-2 prompt strings, raw)" if self.dt_compat else "chat (server template)"

    def iter_items(self) -> Iterator[tuple[Task[Any, Any], Item[Any]]]:
        """Every selected item of every scenario, in suite and file order."""
        sel = self.selection
        for task, options in self.scenarios:
            items: Iterator[Item[Any]] = task.items(self.data, options)
            if sel.sample is not None:
                fraction = sel.sample
                items = (i for i in items if sampled(sel.seed, task.name, i.item_id, fraction))
            caps = [c for c in (sel.limit_for(task.name), options.limit) if c is not None]
            if caps:
                items = itertools.islice(items, min(caps))
            for item in items:
                yield task, replace(item, request=to_llama2_request(item.request)) if self.dt_compat else item

    def iter_units(self) -> Iterator[Unit]:
        for task, item in self.iter_items():
            for sample in range(item.n):
                yield self.unit(task, item, sample)

    @property
    def units(self) -> Units:
        return Units(self)

    @cached_property
    def _summary(self) -> tuple[int, int, bool]:
        """One streaming pass over the items: the request count (items times their ``n``), the sum of the items'
        fingerprints, and whether every item's (task, item id) is its own. An item's request and ``n`` fix its units
        (their seeds derive from the item id and the sample index, or from the request's own seed), so
        fingerprinting items fingerprints every request."""
        total = fingerprints = 0
        ids: set[int] = set()  # hashes of (task, item id); only for this pass
        unique = True
        for task, item in self.iter_items():
            total += item.n
            head = f"{task.name}\x00{item.item_id}\x00{item.n}\x00".encode()
            fingerprints += int.from_bytes(hashlib.sha256(head + _REQUEST_JSON.to_json(item.request)).digest()[:16])
            if unique:
                ident = hash((task.name, item.item_id))
                unique = ident not in ids  # a hash collision only turns the shortcut off, never on
                ids.add(ident)
        return total, fingerprints % 2**128, unique

    @property
    def total(self) -> int:
        """How many requests the plan asks for, counted without building them."""
        return self._summary[0]

    @property
    def unique_ids(self) -> bool:
        """Whether a unit is told apart by its (task, item id, sample index) alone (true unless two items of one task
        share an id): a resume can then skip a finished unit without building its request or its key."""
        return self._summary[2]

    def signature(self) -> str | None:
        """A digest of everything this plan's items derive from, where all of that is known: a plan of prompts files
        only (the ``custom`` task): the files' bytes, the scenarios, the selection, the prompt format, and the code
        that turns lines into requests. None for suites that read data files. Equal signatures mean equal
        :attr:`total`, fingerprints and :attr:`unique_ids`, so a rerun can take them from the run directory
        (:meth:`prime`) instead of enumerating a million requests again."""
        if not self.scenarios or any(task.name != "custom" for task, _ in self.scenarios):
            return None
        digest = hashlib.sha256()
        here = Path(__file__).parent
        code = [
            Path(__file__),
            here / "prompts.py",
            here / "dt_compat.py",
            here / "tasks" / "custom.py",
            Path(_core.__file__),
        ]
        for path in code:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        sel = self.selection
        head = [self.description, self.dt_compat, sel.limit, sel.sample, sel.seed, list(sel.task_limits)]
        digest.update(json.dumps(head).encode())
        for _, options in self.scenarios:
            digest.update(options.model_dump_json().encode())
            try:
                with (self.data.root / str(getattr(options, "file", ""))).open("rb") as f:
                    digest.update(hashlib.file_digest(f, "sha256").digest())
            except OSError:
                return None  # the enumeration will say what is wrong with the file
        return "sha256:" + digest.hexdigest()

    def summary(self) -> tuple[int, int, bool]:
        """What one pass over the items found: (requests, fingerprint sum, unique ids); see :meth:`prime`."""
        return self._summary

    def prime(self, summary: tuple[int, int, bool]) -> None:
        """Take :meth:`summary` from an earlier pass over the same plan (same :meth:`signature`)."""
        self.__dict__["_summary"] = summary

    def unit(self, task: Task[Any, Any], item: Item[Any], sample_index: int) -> Unit:
        return Unit(task=task, item=item, sample_index=sample_index, request=_with_seed(task.name, item, sample_index))

    def plan_hash(self, endpoint_names: list[str]) -> str:
        """Equal for the same endpoints asked the same requests, whatever the order or the servers' URLs (a sum of
        fingerprints, so it streams; computed in the same pass as :attr:`total`)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(sorted(endpoint_names)).encode())
        digest.update(f"{self._summary[1]:032x}".encode())
        return "sha256:" + digest.hexdigest()


def _packaged_suites() -> Path:
    return Path(str(resources.files("comptrust_evaluate") / "data" / "suites"))


def suite_names() -> list[str]:
    return sorted(p.stem for p in _packaged_suites().glob("*.toml"))


def load_suite(name: str, data_dir: Path | None = None) -> Suite:
    """A packaged suite by name (``quick``, ``decodingtrust``) or a suite TOML file; ``data_dir`` replaces its data
    folder. A suite whose ``data`` is ``"hf:AI-Secure/DecodingTrust"`` has no folder of its own (``data_root`` None
    unless ``data_dir`` is given)."""
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
    data = str(doc.get("data", "."))
    root: Path | None
    if data_dir is not None:
        root = data_dir
    elif data == HF_DATA:
        root = None
    else:
        root = (path.parent / data).resolve()
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


def _selected(suite: Suite, tasks: tuple[str, ...] | None) -> tuple[Scenario, ...]:
    if not tasks:
        return suite.scenarios
    known = set(task_names())
    in_suite = {s.task for s in suite.scenarios}
    for name in tasks:
        if name not in known:
            raise ConfigError(f"unknown task {name!r} (--task); tasks: {', '.join(sorted(known))}")
        if name not in in_suite:
            raise ConfigError(f"suite {suite.name} has no {name} scenarios; its tasks: {', '.join(sorted(in_suite))}")
    return tuple(s for s in suite.scenarios if s.task in tasks)


def parse_scenarios(
    suite: Suite, tasks: tuple[str, ...] | None = None
) -> tuple[tuple[Task[Any, Any], ScenarioOptions], ...]:
    """The suite's scenarios (those of ``tasks`` if given), validated; scenario names are unique per task, which
    makes item ids unique (each task numbers its items within a scenario)."""
    parsed = []
    names: set[tuple[str, str]] = set()
    for scenario in _selected(suite, tasks):
        task = get_task(scenario.task)
        options = task.parse_options(scenario.options)
        if (task.name, options.name) in names:
            raise ConfigError(f"suite {suite.name}: two {task.name} scenarios are named {options.name!r}")
        names.add((task.name, options.name))
        parsed.append((task, options))
    return tuple(parsed)


def build_plan(
    suite: Suite,
    limit: int | None = None,
    description: str | None = None,
    *,
    tasks: tuple[str, ...] | None = None,
    sample: float | None = None,
    seed: int = 0,
    dt_compat: bool = False,
    data: DataSource | None = None,
    task_limits: tuple[tuple[str, int], ...] = (),
) -> Plan:
    """Every scenario's items (a ``sample`` of them if asked, then at most ``limit`` per scenario, or its task's own
    limit from ``task_limits``, and at most the scenario's own ``limit``), ``n`` samples each: lazily, nothing is
    read until the plan is iterated or counted. Unless ``data`` is given, the data folder is resolved (fetched from
    Hugging Face if the suite has none) and every file the scenarios need is checked first, so a missing file stops
    the run before it starts."""
    scenarios = parse_scenarios(suite, tasks)
    planned = sorted({task.name for task, _ in scenarios})
    for name, _ in task_limits:
        if name not in planned:
            which = f"the tasks selected from suite {suite.name}" if tasks else f"suite {suite.name}'s tasks"
            hint = f"; or add --task {name}" if tasks and any(s.task == name for s in suite.scenarios) else ""
            raise ConfigError(
                f"--task-limit names {name!r}, which is not one of {which}: {', '.join(planned)}; "
                f"name one of those{hint}"
            )
    selection = Selection(limit=limit, sample=sample, seed=seed, task_limits=task_limits)
    if data is None:
        data = resolve_data(suite.name, suite.data_root, scenarios)
    text = description or f"suite {suite.name}"
    extras = [e for e in (", ".join(tasks) if tasks else "", selection.describe()) if e]
    if dt_compat:
        extras.append("dt-compat prompts")
    if extras:
        text += f" ({'; '.join(extras)})"
    return Plan(
        description=text,
        data=data,
        scenarios=scenarios,
        selection=selection,
        dt_compat=dt_compat,
    )
