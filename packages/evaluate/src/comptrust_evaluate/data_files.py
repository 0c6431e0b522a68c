"""Where a suite's data files come from, and the check, before a run starts, that every one of them is there.

A suite reads a folder laid out like DecodingTrust's ``data/``: ``--data-dir`` (a DecodingTrust checkout's
``data/``), the suite's own folder (``quick``), or, for a suite whose data is DecodingTrust's, the Hugging Face
dataset ``AI-Secure/DecodingTrust``, whose files mirror that layout: the files the plan needs are downloaded once
through ``huggingface_hub`` into its cache (``HF_HOME``; ``HF_HUB_OFFLINE=1`` reuses the cache without a network).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError

from comptrust_evaluate.tasks import DataSource, ScenarioOptions, Task

__all__ = ["DT_GITHUB", "HF_DATASET", "fetch_from_hub", "preflight", "required_files", "resolve_data"]

log = logging.getLogger(__name__)

HF_DATASET = "AI-Secure/DecodingTrust"
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


def fetch_from_hub(files: list[str], revision: str | None = None) -> Path:
    """Download (or find in the cache) ``files`` of the HF dataset; the snapshot folder, laid out like ``data/``."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(
            "reading DecodingTrust's data from Hugging Face needs huggingface_hub (pip install huggingface_hub); "
            "or pass --data-dir with a DecodingTrust checkout's data/ folder"
        ) from None
    log.info(
        "fetching %d files of the dataset %s from Hugging Face (cached after the first time)", len(files), HF_DATASET
    )
    try:
        folder = snapshot_download(repo_id=HF_DATASET, repo_type="dataset", allow_patterns=files, revision=revision)
    except Exception as exc:  # offline, unknown revision, HTTP errors: one line, and where else to get the data
        log.debug("snapshot_download failed", exc_info=True)
        raise ConfigError(
            f"could not fetch {HF_DATASET} from Hugging Face ({type(exc).__name__}: {exc}); " + _where_to_get()
        ) from None
    return Path(folder)


def resolve_data(
    suite_name: str, root: Path | None, scenarios: Iterable[tuple[Task[Any, Any], ScenarioOptions]]
) -> DataSource:
    """The data folder for ``scenarios``, checked: ``root`` if the suite has one (or ``--data-dir`` gave one), else
    the HF dataset's files, fetched. Every file the scenarios read must exist, or nothing runs."""
    files = required_files(scenarios)
    if root is not None:
        preflight(root, files, f"the data folder of suite {suite_name} (--data-dir, or the suite's own)")
        return DataSource(root)
    folder = fetch_from_hub(files) if files else Path(".")
    preflight(folder, files, f"the Hugging Face dataset {HF_DATASET}")
    return DataSource(folder)
