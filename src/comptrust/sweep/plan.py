"""The plan file (TOML): models × methods × levels × calibration seeds, and how to serve, evaluate and analyze them.

Every key is checked when the file is read (types, ranges through compress's own config checks, list shapes), and
an error names the key and its line. Whether a method name is registered in this installation is checked when the
sweep runs, not here, so a plan written for methods another install has (gptq, awq, ...) still parses.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from comptrust_compress import CompressConfig
from comptrust_core import ConfigError
from comptrust_evaluate import detector_names, scorer_names
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comptrust.sweep._lines import key_lines, line_of

__all__ = [
    "AnalyzePlan",
    "Cell",
    "EvaluatePlan",
    "MethodPlan",
    "ModelPlan",
    "Plan",
    "RayPlan",
    "ServePlan",
    "StudyPlan",
    "load_plan",
    "parse_plan",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LEVEL_KEYS = ("bits", "group_size", "act_order", "sparsity", "pattern", "export")
_CALIB_KEYS = ("calib_data", "calib_samples", "calib_seqlen", "calib_seed")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _safe_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{what} may hold letters, digits, '.', '_' and '-' only (got {value!r})")
    return value


class ModelPlan(_Strict):
    name: str = Field(description="short name used in checkpoint and run folder names")
    source: str = Field(min_length=1, description="alias, Hugging Face id or local folder, as `compress --model`")
    trust_remote_code: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _safe_name(v, "a model name")


def _compress_check(option: str, value: Any) -> None:
    """Range-check one method option with compress's own config checks (nothing is loaded or run)."""
    try:
        CompressConfig(model="plan", method="plan", out=Path("plan"), **{option: value})
    except ConfigError as exc:
        raise ValueError(str(exc).replace("--", "", 1)) from None


class MethodPlan(_Strict):
    """One method; a list in bits, sparsity, pattern or calib_seed expands into one cell per value."""

    name: str
    bits: int | list[int] | None = None
    group_size: int | None = None
    act_order: bool | None = None
    sparsity: float | list[float] | None = None
    pattern: str | list[str] | None = None
    calib_data: str | None = None
    calib_samples: int | None = None
    calib_seqlen: int | None = None
    calib_seed: int | list[int] | None = None
    export: Literal["compressed", "fake-quant"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _safe_name(v, "a method name")

    @field_validator("bits", "sparsity", "pattern", "calib_seed", "group_size", "calib_samples", "calib_seqlen")
    @classmethod
    def _values(cls, v: Any, info: Any) -> Any:
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list expands into no checkpoint; give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{v} repeats a value; list each one once")
        for value in values:
            if value is not None:
                _compress_check(info.field_name, value)
        return v

    @model_validator(mode="after")
    def _dense_has_no_levels(self) -> MethodPlan:
        if self.name == "dense":
            given = [k for k in (*_LEVEL_KEYS, *_CALIB_KEYS) if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"dense is the uncompressed base, made once per model: drop {', '.join(given)} "
                    "from this [[methods]]"
                )
        return self

    def axes(self) -> dict[str, list[Any]]:
        """The expanded values of each list-valued option (a scalar is a one-value axis)."""
        return {
            k: (v if isinstance(v, list) else [v])
            for k, v in {
                "bits": self.bits,
                "sparsity": self.sparsity,
                "pattern": self.pattern,
                "calib_seed": self.calib_seed,
            }.items()
        }


class ServePlan(_Strict):
    launcher: str = Field(default="embedded", description="embedded | process | docker | auto")
    engine: Literal["tgi", "vllm"] = "tgi"
    engine_args: list[str] = Field(default_factory=list, description="more flags for the engine's command line")
    engine_command: list[str] | None = Field(
        default=None, description="the process launcher's engine program, replacing the one it finds"
    )
    image: str | None = Field(default=None, description="container image override (docker launcher)")
    gpus: list[int] = Field(default_factory=list, description="GPU indices the sweep may use; empty: CPU / one server")
    gpus_per_server: int = Field(default=1, ge=1, description="GPUs each server gets (TGI num_shard)")
    dtype: str | None = Field(default=None, description="compute dtype; 'auto' = the checkpoint's own")
    max_batch: int | None = Field(default=None, ge=1)
    max_input_tokens: int | None = Field(default=None, ge=1)
    max_total_tokens: int | None = Field(default=None, ge=1)
    shm_size: str | None = None
    startup_timeout_s: float = Field(default=600.0, gt=0)
    replicas: int = Field(
        default=1,
        ge=1,
        description="servers per checkpoint (each on gpus_per_server GPUs): one logical endpoint, its requests "
        "spread over all of them",
    )

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[int]) -> list[int]:
        if any(g < 0 for g in v):
            raise ValueError("GPU indices are 0 or more")
        if len(set(v)) != len(v):
            raise ValueError(f"{v} names a GPU twice")
        return v

    @model_validator(mode="after")
    def _groups(self) -> ServePlan:
        """Enough GPUs for one checkpoint: ``replicas`` servers of ``gpus_per_server`` each."""
        if not self.gpus or len(self.gpus) >= self.gpus_per_server * self.replicas:
            return self
        if len(self.gpus) < self.gpus_per_server:
            raise ValueError(
                f"gpus_per_server = {self.gpus_per_server} but only {len(self.gpus)} GPU(s) listed in gpus; "
                "list more GPUs or lower gpus_per_server"
            )
        raise ValueError(
            f"replicas = {self.replicas} servers of {self.gpus_per_server} GPU(s) need "
            f"{self.gpus_per_server * self.replicas} GPUs but gpus lists {len(self.gpus)}; list more GPUs or lower "
            "replicas"
        )

    def slots(self) -> list[tuple[int, ...]]:
        """The GPUs of each checkpoint that may be served at once (its ``replicas`` servers together); ``[()]`` (one
        checkpoint, no GPU) without gpus.

        GPUs left over after the last full group stay unused."""
        if not self.gpus:
            return [()]
        k = self.gpus_per_server * self.replicas
        return [tuple(self.gpus[i : i + k]) for i in range(0, len(self.gpus) - k + 1, k)]

    def server_groups(self, gpus: tuple[int, ...]) -> list[tuple[int, ...]]:
        """A checkpoint's GPUs split into its replicas' groups (``replicas`` empty groups without GPUs)."""
        if not gpus:
            return [()] * self.replicas
        k = len(gpus) // self.replicas
        return [gpus[i * k : (i + 1) * k] for i in range(self.replicas)]


class EvaluatePlan(_Strict):
    suite: str = "quick"
    tasks: list[str] | None = Field(default=None, description="perspectives/tasks to run; None: all of the suite's")
    limit: int | None = Field(default=None, ge=1, description="items per scenario, every task")
    limits: dict[str, int] = Field(default_factory=dict, description="items per scenario for one task")
    sample: float | None = Field(default=None, gt=0.0, le=1.0, description="fraction of items to draw")
    sample_seed: int | None = Field(default=None, ge=0, description="seed of the sample")
    dt_compat: bool = Field(default=False, description="send DecodingTrust's Llama-2 prompt strings, as the paper")
    data_dir: str | None = Field(default=None, description="a DecodingTrust checkout's data/ folder")
    max_concurrency: int = Field(default=16, ge=1)
    rps: float | None = Field(default=None, gt=0)
    toxicity_scorer: str = Field(
        default="offline", description="scores toxicity answers: offline, perspective, hf, or none (evaluate's names)"
    )
    toxicity_options: dict[str, str | int | float] = Field(
        default_factory=dict, description='the scorer\'s options, e.g. {key_env = "PERSPECTIVE_API_KEY", qps = 1}'
    )
    refusal_detectors: list[str] = Field(
        default_factory=list, description="more refusal detectors judging every answer (evaluate --refusal-detector)"
    )

    @field_validator("toxicity_scorer")
    @classmethod
    def _scorer(cls, v: str) -> str:
        known = [*scorer_names(), "none"]
        if v not in known:
            raise ValueError(f"{v!r} is not a toxicity scorer; choose one of {', '.join(known)}")
        return v

    @field_validator("refusal_detectors")
    @classmethod
    def _detectors(cls, v: list[str]) -> list[str]:
        known = detector_names()
        for name in v:
            if name not in known:
                raise ValueError(f"{name!r} is not a refusal detector; choose from {', '.join(known)}")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("an empty task list runs nothing; drop the key to run every task of the suite")
            if len(set(v)) != len(v):
                raise ValueError(f"{v} names a task twice")
        return v

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: dict[str, int]) -> dict[str, int]:
        for task, n in v.items():
            if n < 1:
                raise ValueError(f"the limit of {task} is {n}; give at least 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EvaluatePlan:
        if self.tasks is not None:
            stray = sorted(set(self.limits) - set(self.tasks))
            if stray:
                raise ValueError(f"limits name {', '.join(stray)}, which tasks does not list; add them to tasks")
        if self.sample_seed is not None and self.sample is None:
            raise ValueError("sample_seed is the seed of sample; give sample (a fraction) too, or drop sample_seed")
        return self

    def request_fingerprint(self) -> str:
        """What decides which requests are sent (not how fast): a change means evaluating again."""
        return self.model_dump_json(exclude={"max_concurrency", "rps"})


class AnalyzePlan(_Strict):
    variant: Literal["dt-main", "dt-compressed-trust"] = "dt-compressed-trust"
    compare: Literal["paper"] | None = None
    plots: bool = True


class GatePlan(_Strict):
    """``[gate]``: the regression gate ``analyze --gate max-drop=X`` applies, run by the sweep at its end."""

    max_drop: float = Field(ge=0, description="score points; see comptrust_analysis.report.GATE_RULE")


class StudyPlan(_Strict):
    name: str
    out: str | None = Field(default=None, description="output folder, relative to the current directory")
    device: Literal["cpu", "cuda"] = "cpu"
    executor: Literal["local", "ray"] = Field(
        default="local", description="local: this machine; ray: every stage as Ray tasks on a cluster (see [ray])"
    )
    store: str | None = Field(
        default=None,
        description="the ray executor's study store: a shared path or an object-store URL (s3://, gs://); "
        "default: the out folder, which then must be shared by every node",
    )

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        return _safe_name(v, "study name")

    @field_validator("store")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty store; give a path or a URL such as s3://bucket/study, or drop the key")
        return v


class RayPlan(_Strict):
    """``[ray]``: where the ray executor runs and what each cell asks of the cluster."""

    address: str | None = Field(
        default=None, description='the cluster (ray://host:10001, host:6379 or "auto"); none: a local Ray'
    )
    compress_cpus: float = Field(default=1.0, gt=0, description="CPUs a compression cell holds")
    compress_gpus: float | None = Field(default=None, ge=0, description="GPUs it holds; default 1 on cuda, else 0")
    compress_memory_gb: float | None = Field(default=None, gt=0, description="memory it reserves (Ray's accounting)")
    serve_cpus: float = Field(default=1.0, gt=0, description="CPUs a serve+evaluate cell holds")
    serve_gpus: float | None = Field(
        default=None,
        ge=0,
        description="GPUs it holds; default gpus_per_server x replicas on cuda, else 0 (logical GPUs on a test "
        "cluster: give them here)",
    )
    serve_memory_gb: float | None = Field(default=None, gt=0)
    flush_records: int = Field(default=1000, ge=1, description="a worker flushes its records every N records ...")
    flush_seconds: float = Field(default=30.0, gt=0, description="... or every T seconds, whichever comes first")
    max_retries: int = Field(default=3, ge=0, description="times a cell is rerun after its node or worker died")
    progress_seconds: float = Field(default=10.0, gt=0, description="how often the driver prints the study's state")


class Cell(_Strict):
    """One checkpoint of the grid: a model compressed by one method at one level and seed."""

    model: ModelPlan
    method: str
    bits: int | None = None
    group_size: int | None = None
    act_order: bool | None = None
    sparsity: float | None = None
    pattern: str | None = None
    calib_data: str | None = None
    calib_samples: int | None = None
    calib_seqlen: int | None = None
    calib_seed: int | None = None
    export: str | None = None

    @property
    def name(self) -> str:
        parts = [self.model.name, self.method]
        if self.bits is not None:
            parts.append(f"w{self.bits}")
            if self.group_size is not None:
                parts.append(f"g{self.group_size}")
        if self.pattern not in (None, "unstructured"):
            parts.append(str(self.pattern).replace(":", "of"))
        elif self.sparsity is not None:
            parts.append(f"s{self.sparsity:g}")
        if self.calib_seed is not None:
            parts.append(f"seed{self.calib_seed}")
        return "-".join(parts)


class Plan(_Strict):
    study: StudyPlan
    models: list[ModelPlan] = Field(min_length=1)
    methods: list[MethodPlan] = Field(min_length=1)
    serve: ServePlan = ServePlan()
    evaluate: EvaluatePlan = EvaluatePlan()
    analyze: AnalyzePlan = AnalyzePlan()
    gate: GatePlan | None = None
    ray: RayPlan = RayPlan()

    def out_dir(self) -> Path:
        return Path(self.study.out) if self.study.out else Path("sweeps") / self.study.name

    def cells(self) -> list[Cell]:
        """The grid, model by model, in the plan's method order (dense has no axes, so it is one cell)."""
        cells: list[Cell] = []
        for model in self.models:
            for m in self.methods:
                axes = m.axes()
                for values in itertools.product(*axes.values()):
                    level = dict(zip(axes, values, strict=True))
                    cells.append(
                        Cell(
                            model=model,
                            method=m.name,
                            group_size=m.group_size,
                            act_order=m.act_order,
                            calib_data=m.calib_data,
                            calib_samples=m.calib_samples,
                            calib_seqlen=m.calib_seqlen,
                            export=m.export,
                            **level,
                        )
                    )
        return cells

    @model_validator(mode="after")
    def _unique(self) -> Plan:
        models = [m.name for m in self.models]
        if len(set(models)) != len(models):
            raise ValueError(f"two [[models]] share a name ({', '.join(models)}); give each its own")
        names = [c.name for c in self.cells()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"the plan yields the same checkpoint twice: {', '.join(dupes)}; remove the repeat")
        return self


def _where(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"#{part + 1}" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_plan(text: str, origin: str = "plan") -> Plan:
    """Validate a plan's TOML text; every problem is named by key and line in one :class:`ConfigError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"plan file {origin} is not valid TOML: {exc}") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = line_of(lines, loc)
            at = f"line {line}: " if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; check its spelling (see examples/quickstart.toml and the README's sweep section)"
            problems.append(f"{at}{_where(loc)}: {msg}")
        shown = "\n  ".join(problems[:8])
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise ConfigError(f"plan file {origin}: {len(problems)} problem(s):\n  {shown}{more}") from None


def load_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"plan file not found: {path}; see examples/quickstart.toml") from None
    return parse_plan(text, str(path))
