"""``analyze``: scores for one or more run directories, printed and written as Parquet and Markdown."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from comptrust_core import ConfigError, atomic_write_text

from comptrust_analysis.load import load_runs
from comptrust_analysis.scores import Variant, perspective_scores, side_by_side
from comptrust_analysis.tables import to_markdown, to_text

__all__ = ["AnalysisConfig", "AnalysisResult", "analyze", "render_text"]

_TABLE_COLUMNS = ["perspective", "score", "refusal_rate", "n", "errors"]


@dataclass(frozen=True)
class AnalysisConfig:
    run_dirs: tuple[Path, ...]
    out: Path | None = None
    variant: Variant = "dt-main"

    def out_dir(self) -> Path:
        if self.out is not None:
            return self.out
        if len(self.run_dirs) == 1:
            return self.run_dirs[0] / "analysis"
        return Path("comptrust-analysis")


@dataclass(frozen=True)
class AnalysisResult:
    scores: pl.DataFrame
    out_dir: Path
    files: tuple[Path, ...]


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _groups(scores: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    out: list[tuple[str, str, pl.DataFrame]] = []
    for (run, checkpoint), part in scores.group_by("run", "checkpoint", maintain_order=True):
        out.append((str(run), str(checkpoint), part.select(_TABLE_COLUMNS)))
    return out


def render_text(scores: pl.DataFrame) -> str:
    """The terminal view: one per-perspective table per (run, checkpoint), then all checkpoints side by side."""
    parts: list[str] = []
    for run, checkpoint, table in _groups(scores):
        parts.append(f"run {run} · {checkpoint} (variant {scores['variant'][0]}; score 0-100, refusal %)\n")
        parts.append(to_text(table))
    if scores.select("run", "checkpoint").n_unique() > 1:
        parts.append("side by side: score (refusal %)\n")
        parts.append(to_text(side_by_side(scores)))
    return "\n".join(parts)


def _markdown(scores: pl.DataFrame) -> str:
    parts = ["# comptrust scores\n", f"Scorer variant: `{scores['variant'][0]}`. Score 0-100, refusal rate in %.\n"]
    for run, checkpoint, table in _groups(scores):
        parts.append(f"## {checkpoint} (run `{run}`)\n")
        parts.append(to_markdown(table))
    if scores.select("run", "checkpoint").n_unique() > 1:
        parts.append("## Side by side: score (refusal %)\n")
        parts.append(to_markdown(side_by_side(scores)))
    return "\n".join(parts)


def analyze(config: AnalysisConfig) -> AnalysisResult:
    if not config.run_dirs:
        raise ConfigError("analyze needs at least one run directory (written by `evaluate --out RUN_DIR`)")
    runs = load_runs(list(config.run_dirs))
    scores = perspective_scores(runs, config.variant)
    if scores.is_empty():
        raise ConfigError(
            "no records found in " + ", ".join(str(p) for p in config.run_dirs) + "; run `evaluate` into them first"
        )
    out = config.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    parquet, md = out / "scores.parquet", out / "scores.md"
    _write_parquet(scores, parquet)
    atomic_write_text(md, _markdown(scores))
    return AnalysisResult(scores=scores, out_dir=out, files=(parquet, md))
