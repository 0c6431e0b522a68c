"""``OUT/sweep-state.json``: which stage each cell of the grid has finished, so a rerun resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from comptrust_core import RunDirError, atomic_write_text
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["CellState", "SweepState", "load_state", "save_state"]

STATE_FILE = "sweep-state.json"
Stage = Literal["pending", "compressed", "evaluated", "failed"]


class CellState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage = "pending"
    error: str | None = None
    failed_stage: str | None = None
    ok: int = 0
    errors: int = 0
    cell: str | None = Field(default=None, description="fingerprint of the plan cell its checkpoint was made for")
    evaluated_with: str | None = Field(default=None, description="fingerprint of the [evaluate] settings last run")
    run_started_with: str | None = Field(
        default=None, description="fingerprint of the [evaluate] settings its run folder was started with"
    )
    gpus: list[int] | None = Field(default=None, description="the GPU group its server last ran on")
    compress_s: float | None = Field(default=None, description="measured: the checkpoint's compression wall time")
    startup_s: float | None = Field(default=None, description="measured: launch until the server was healthy")
    evaluate_s: float | None = Field(default=None, description="measured: wall time of the last evaluation")
    requests: int | None = Field(default=None, description="requests answered (ok or error) in the last evaluation")
    node: str | None = Field(default=None, description="the cluster node that last ran it (ray executor)")
    log: str | None = Field(default=None, description="where its log is (ray executor: in the study store)")


class SweepState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    plan_file: str
    cells: dict[str, CellState] = Field(default_factory=dict)


def load_state(out: Path, plan_file: Path) -> SweepState:
    path = out / STATE_FILE
    if not path.is_file():
        return SweepState(plan_file=str(plan_file))
    try:
        return SweepState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise RunDirError(f"{path} is damaged ({exc.__class__.__name__}); delete it to re-check every stage") from exc


def save_state(out: Path, state: SweepState) -> None:
    atomic_write_text(out / STATE_FILE, state.model_dump_json(indent=2) + "\n")
