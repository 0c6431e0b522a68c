"""The task interface: build items from a benchmark's files, then turn each response into an outcome."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from comptrust_core import Attribute, ConfigError, RequestSpec, ScoreField
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from comptrust_evaluate.refusal import Verdict

__all__ = [
    "VARIANTS",
    "DataSource",
    "Item",
    "Outcome",
    "ScenarioOptions",
    "Task",
    "attrs",
    "derive_seed",
    "iter_jsonl",
    "read_json",
    "read_jsonl",
    "score_fields",
]

VARIANTS = ("dt-main", "dt-compressed-trust")
"""Scorer variants: DecodingTrust main, and the modified DecodingTrust the compressed-trust paper used."""

C = TypeVar("C")
OptionsT = TypeVar("OptionsT", bound="ScenarioOptions")


class ScenarioOptions(BaseModel):
    """What every scenario of a suite has: a name (the records' sub-scenario, unless the task refines it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1, description="at most this many items")


@dataclass(frozen=True)
class Item(Generic[C]):
    """One benchmark item: the request to send (``n`` samples of it), its gold label, and what its parser needs."""

    item_id: str
    sub_scenario: str
    request: RequestSpec
    context: C
    n: int = 1
    label: str | None = None
    attributes: tuple[Attribute, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a task concluded from one response. A request scored from its prompt's logprobs reads no generated
    text: its records carry no refusal verdict, whatever ``refusal`` says."""

    refusal: Verdict
    prediction: str | None = None
    scores: tuple[ScoreField, ...] = ()
    attributes: tuple[Attribute, ...] = ()


@dataclass(frozen=True)
class DataSource:
    """A benchmark data folder laid out like DecodingTrust's ``data/``."""

    root: Path

    def path(self, relative: str) -> Path:
        path = self.root / relative
        if not path.exists():
            raise ConfigError(
                f"data file {relative} not found under {self.root}; pass --data-dir with the benchmark data"
            )
        return path


class Task(ABC, Generic[OptionsT, C]):
    """A registered task. Subclasses set ``name``, ``perspective`` and ``options_schema``, and implement ``items``
    and ``evaluate``."""

    name: ClassVar[str]
    perspective: ClassVar[str]
    options_schema: ClassVar[TypeAdapter[Any]]
    """Validates one scenario's options into this task's ``OptionsT`` (a model, or a union of models)."""
    needs_toxicity: ClassVar[bool] = False
    """Whether each response also gets a toxicity score from the run's toxicity scorer (``--toxicity-scorer``)."""

    def parse_options(self, raw: Mapping[str, Any]) -> OptionsT:
        """Validate one scenario's options (a suite entry without its ``task`` key); a problem is a ConfigError."""
        try:
            options: OptionsT = self.options_schema.validate_python(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"task {self.name}: invalid scenario {raw.get('name', '?')!r}: {problems}") from None
        return options

    @abstractmethod
    def items(self, data: DataSource, options: OptionsT) -> Iterator[Item[C]]:
        """The scenario's items, in file order, each with a stable id."""

    @abstractmethod
    def evaluate(self, item: Item[C], text: str) -> Outcome:
        """Parse one response: prediction, refusal verdict, score fields."""

    def files(self, options: OptionsT) -> tuple[str, ...]:
        """The data files (relative to the data folder) a scenario reads: checked before a run starts, and what is
        fetched from the Hugging Face dataset. A task that reads none keeps this default."""
        return ()

    def evaluate_prompt(self, item: Item[C], prompt_logprobs: tuple[float | None, ...]) -> Outcome:
        """Score one request that asked for its prompt's logprobs (``params.prompt_logprobs``), from them alone:
        one entry per prompt token, ``None`` where the server gives none (the first). Tasks that ask override it."""
        raise NotImplementedError(f"task {self.name} does not score prompt logprobs")


def score_fields(main: float | None, compressed_trust: float | None, name: str = "score") -> tuple[ScoreField, ...]:
    """The same score under both variants (values may differ; ``None`` means "excluded under this variant")."""
    return (
        ScoreField(name=name, value=main, variant=VARIANTS[0]),
        ScoreField(name=name, value=compressed_trust, variant=VARIANTS[1]),
    )


def attrs(**values: object) -> tuple[Attribute, ...]:
    """Attributes from keyword arguments, skipping ``None``."""
    return tuple(Attribute(name=k, value=str(v)) for k, v in values.items() if v is not None)


def iter_jsonl(path: Path) -> Iterator[Any]:
    """A JSON Lines file, one row at a time; a bad line is a one-line error naming the file and line."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def read_jsonl(path: Path) -> list[Any]:
    """A JSON Lines file, all rows."""
    return list(iter_jsonl(path))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def derive_seed(task: str, item_id: str, sample_index: int) -> int:
    """A positive 31-bit seed that depends only on the task, the item and the sample index."""
    digest = hashlib.sha256(f"{task}\x00{item_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1
