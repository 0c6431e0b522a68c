"""Where a suite's data files come from, and the check, before a run starts, that every one of them is there.

A suite reads a folder laid out like DecodingTrust's ``data/``: ``--data-dir`` (a DecodingTrust checkout's
``data/``), the suite's own folder (``quick``), or, for a suite whose data is DecodingTrust's, the Hugging Face
dataset ``AI-Secure/DecodingTrust`` (see :mod:`comptrust_evaluate.hub_data`): the files the plan needs are
downloaded once through ``huggingface_hub`` into its cache (``HF_HUB_OFFLINE=1`` reuses the cache).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError

from comptrust_evaluate.hub_data import HF_DATASET, materialize
from comptrust_evaluate.tasks import DataSource, ScenarioOptions, Task

__all__ = ["DT_GITHUB", "HF_DATASET", "preflight", "required_files", "resolve_data"]

log = logging.getLogger(__name__)

DT_GITHUB = "https://github.com/AI-secure/DecodingTrust"
_SHOWN = 12


def required_files(scenarios: Iterable[tuple[Task[Any, Any], ScenarioOptions]]) -> list[str]:
    """Every data file the scenarios read, relative to the data folder, sorted, once each."""
    return sorted({f for task, options in scenarios for f in task.files(options)})


def _where_to_get() -> str:
    return (
        f"get DecodingTrust's data from its repository (git clone {DT_GITHUB}, then --data-dir DecodingTrust/data) "
        f"or from the Hugging Face dataset {HF_DATASET} (run online without --data-dir to download and cache the "
        f"files, or `hf download {HF_DATASET} --repo-type dataset --local-dir DIR` then --data-dir DIR); "
        "or leave those tasks out with --task"
    )


def preflight(root: Path, files: Iterable[str], origin: str) -> None:
    """Raise one :class:`ConfigError` naming every missing file (the first few, and how many more)."""
    missing = [f for f in files if not (root / f).is_file()]
    if not missing:
        return
    shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else "")
    raise ConfigError(
        f"{len(missing)} data file(s) the plan needs are missing from {origin} ({root}): {shown}; " + _where_to_get()
    )


def resolve_data(
    suite_name: str, root: Path | None, scenarios: Iterable[tuple[Task[Any, Any], ScenarioOptions]]
) -> DataSource:
    """The data folder for ``scenarios``, checked: ``root`` if the suite has one (or ``--data-dir`` gave one), else
    the HF dataset's files, fetched. Every file the scenarios read must exist, or nothing runs."""
    files = required_files(scenarios)
    if root is not None:
        preflight(root, files, f"the data folder of suite {suite_name} (--data-dir, or the suite's own)")
        log.info("suite %s: %d data files found under %s", suite_name, len(files), root)
        return DataSource(root)
    try:
        folder = materialize(files)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {_where_to_get()}") from None
    preflight(folder, files, f"the Hugging Face dataset {HF_DATASET}")
    log.info(
        "suite %s: %d data files from %s (revision %s), viewed at %s",
        suite_name,
        len(files),
        HF_DATASET,
        folder.name,
        folder,
    )
    return DataSource(folder)
