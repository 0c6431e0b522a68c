"""``RUN_DIR/run.json``: what a run directory holds, so that a rerun can resume it and nobody mixes two runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from comptrust_core._io import atomic_write_text, check_schema_version, read_json
from comptrust_core.endpoint import Endpoint
from comptrust_core.errors import RunDirError
from comptrust_core.paths import RUN_FILE

__all__ = ["RUN_SCHEMA_VERSION", "RunInfo", "read_run_info", "write_run_info"]

RUN_SCHEMA_VERSION = 1


class RunInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = RUN_SCHEMA_VERSION
    run_id: str
    plan_hash: str = Field(
        description="hash of what is asked (suite or prompts, tasks, parameters): equal means resumable"
    )
    plan: str = Field(description="human-readable description of the plan, e.g. 'suite quick'")
    tasks: list[str]
    endpoints: list[Endpoint]
    created_at: str
    comptrust_version: str


def write_run_info(run_dir: Path, info: RunInfo) -> None:
    atomic_write_text(run_dir / RUN_FILE, info.model_dump_json(indent=2) + "\n")


def read_run_info(run_dir: Path) -> RunInfo:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a comptrust run directory (no {RUN_FILE}); pass a folder `evaluate` wrote")
    data = read_json(path, "run file")
    check_schema_version(
        data.get("schema_version") if isinstance(data, dict) else None, RUN_SCHEMA_VERSION, "run file", path
    )
    try:
        return RunInfo.model_validate(data)
    except ValueError as exc:
        raise RunDirError(f"run file {path} is invalid: {exc}") from exc
