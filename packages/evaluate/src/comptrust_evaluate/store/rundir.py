"""The run directory: ``run.json`` written at start, refused when it describes a different run."""

from __future__ import annotations

from pathlib import Path

from comptrust_core import RECORDS_DIR, RUN_FILE, RunDirError, RunInfo, read_run_info, write_run_info

from comptrust_evaluate.store.lock import LOCK_FILE

__all__ = ["open_run_dir"]


def open_run_dir(out: Path, info: RunInfo) -> tuple[RunInfo, bool]:
    """Create ``out`` for ``info``, or reopen it if it holds the same plan; (the run's info, resumed?).

    A folder holding a different run (another plan hash), or files but no ``run.json``, is refused.
    """
    if (out / RUN_FILE).is_file():
        existing = read_run_info(out)
        if existing.plan_hash != info.plan_hash:
            names = ", ".join(e.name for e in existing.endpoints)
            raise RunDirError(
                f"--out {out} holds a different run ({existing.plan!r} on {names}, created {existing.created_at}); "
                "pass a new --out folder"
            )
        updated = existing.model_copy(update={"endpoints": info.endpoints})
        write_run_info(out, updated)
        return updated, True
    if out.exists() and (not out.is_dir() or any(p.name not in (RECORDS_DIR, LOCK_FILE) for p in out.iterdir())):
        raise RunDirError(f"--out {out} exists and is not an empty folder nor a comptrust run; pass a new --out folder")
    if (out / RECORDS_DIR).is_dir() and any((out / RECORDS_DIR).iterdir()):
        raise RunDirError(f"--out {out} holds records but no {RUN_FILE}; pass a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(out, info)
    return info, False
