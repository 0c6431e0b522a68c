"""The plan file (TOML): models × methods × levels × calibration seeds, and how to serve, evaluate and analyze them."""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path
from typing import Literal

from comptrust_core import ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Cell", "MethodPlan", "ModelPlan", "Plan", "load_plan"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelPlan(_Strict):
    name: str = Field(description="short name used in checkpoint and run folder names")
    source: str = Field(description="alias, Hugging Face id or local folder, as `compress --model` takes it")


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


class ServePlan(_Strict):
    launcher: str = "embedded"
    dtype: str | None = Field(default=None, description="compute dtype; 'auto' = the checkpoint's own")
    max_batch: int | None = None
    startup_timeout_s: float = 600.0


class EvaluatePlan(_Strict):
    suite: str = "quick"
    max_concurrency: int = 16
    limit: int | None = None


class AnalyzePlan(_Strict):
    variant: Literal["dt-main", "dt-compressed-trust"] = "dt-main"


class StudyPlan(_Strict):
    name: str
    out: str | None = Field(default=None, description="output folder, relative to the current directory")
    device: Literal["cpu", "cuda"] = "cpu"

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("study name may hold letters, digits, '.', '_' and '-' only")
        return v


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

    def out_dir(self) -> Path:
        return Path(self.study.out) if self.study.out else Path("sweeps") / self.study.name

    def cells(self) -> list[Cell]:
        cells: list[Cell] = []
        for model in self.models:
            for m in self.methods:
                axes = {
                    k: (v if isinstance(v, list) else [v])
                    for k, v in {
                        "bits": m.bits,
                        "sparsity": m.sparsity,
                        "pattern": m.pattern,
                        "calib_seed": m.calib_seed,
                    }.items()
                }
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
        names = [c.name for c in cells]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"the plan yields the same checkpoint twice: {', '.join(dupes)}; remove the repeat")
        return cells


def load_plan(path: Path) -> Plan:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"plan file not found: {path}; see examples/quickstart.toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"plan file {path} is not valid TOML: {exc}") from exc
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"plan file {path}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)") from exc
