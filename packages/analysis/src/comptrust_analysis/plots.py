"""Plots with matplotlib's Agg canvas (no display, no pyplot state): score against bits and against sparsity, one line
per method, and a radar chart per configuration. Every figure is written as PNG and SVG.

All plots draw the across-seeds table (:func:`~comptrust_analysis.seeds.seed_summary`): points are means over
calibration seeds, error bars their 95% interval (``ci_half``: item-level standard error and seed-to-seed spread;
the standard deviation over seeds where no standard error is known), and the dense base model is the reference (a
dashed line, or the point at sparsity 0).
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from comptrust_core import atomic_write_bytes

from comptrust_analysis.seeds import AGGREGATES, PERSPECTIVE_ORDER

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["bits_figure", "radar_figure", "sparsity_figure", "write_plots"]

log = logging.getLogger(__name__)

_PANELS = (*PERSPECTIVE_ORDER, *AGGREGATES)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(seeds: pl.DataFrame) -> list[str]:
    scored = set(seeds.filter(pl.col("mean").is_not_null())["perspective"].to_list())
    return [p for p in _PANELS if p in scored]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _dense(seeds: pl.DataFrame, perspective: str) -> float | None:
    d = seeds.filter((pl.col("method") == "dense") & (pl.col("perspective") == perspective))["mean"]
    return float(d[0]) if d.len() and d[0] is not None else None


def _dense_bar(seeds: pl.DataFrame, perspective: str) -> float:
    d = seeds.filter((pl.col("method") == "dense") & (pl.col("perspective") == perspective))
    if d.is_empty() or "ci_half" not in d.columns:
        return 0.0
    value = d["ci_half"][0]
    return float(value) if value is not None else 0.0


def _line_plot(seeds: pl.DataFrame, x: str, line_key: pl.Expr, xlabel: str, title: str) -> Figure | None:
    panels = _panels(seeds)
    if seeds.is_empty() or not panels:
        return None
    rows, cols = _grid(len(panels))
    fig = _new_figure(3.2 * cols, 2.6 * rows)
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, perspective in zip(axes, panels, strict=False):
        part = seeds.filter((pl.col("perspective") == perspective) & pl.col("mean").is_not_null())
        dense = _dense(seeds, perspective)
        for (key,), points in part.filter(pl.col(x).is_not_null()).group_by(line_key, maintain_order=True):
            bar = pl.coalesce("ci_half", "std") if "ci_half" in points.columns else pl.col("std")
            line = points.group_by(x).agg(pl.col("mean").mean(), bar.mean().alias("bar")).sort(x)
            xs, ys = line[x].to_list(), line["mean"].to_list()
            errs = line["bar"].fill_null(0.0).to_list()
            if x == "x_sparsity" and dense is not None:
                xs, ys = [0.0, *xs], [dense, *ys]
                errs = [_dense_bar(seeds, perspective), *errs]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=str(key))
        if dense is not None and x == "bits":
            ax.axhline(dense, color="grey", linestyle="--", label="dense")
        ax.set_title(perspective)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))
    return fig


def bits_figure(seeds: pl.DataFrame) -> Figure | None:
    """Score against bits, one panel per perspective, one line per method (and group size); None without data."""
    quant = seeds.filter(pl.col("bits").is_not_null() & (pl.col("method") != "dense"))
    if quant.is_empty():
        return None
    key = pl.col("method") + pl.when(pl.col("group_size").is_not_null()).then(
        pl.lit(" g") + pl.col("group_size").cast(pl.String)
    ).otherwise(pl.lit(""))
    title = "score against bits (mean over seeds, 95% intervals; dashed: dense)"
    return _line_plot(seeds, "bits", key, "bits per weight", title)


def sparsity_figure(seeds: pl.DataFrame) -> Figure | None:
    """Score against sparsity, one panel per perspective, one line per method and pattern, from dense at 0."""
    nm = pl.col("pattern").str.extract(r"^(\d+):(\d+)$", 1).cast(pl.Float64)
    mm = pl.col("pattern").str.extract(r"^(\d+):(\d+)$", 2).cast(pl.Float64)
    pruned = seeds.with_columns(x_sparsity=pl.coalesce(pl.col("target_sparsity"), 1 - nm / mm)).filter(
        pl.col("x_sparsity").is_not_null() & (pl.col("x_sparsity") > 0) & (pl.col("method") != "dense")
    )
    if pruned.is_empty():
        return None
    dense = seeds.filter(pl.col("method") == "dense").with_columns(x_sparsity=pl.lit(None, dtype=pl.Float64))
    pruned = pl.concat([pruned, dense])
    key = pl.col("method") + pl.lit(" ") + pl.col("pattern").fill_null("unstructured")
    return _line_plot(pruned, "x_sparsity", key, "sparsity", "score against sparsity (mean over seeds, 95% intervals)")


def radar_figure(seeds: pl.DataFrame, label: str) -> Figure | None:
    """The configuration's mean score per perspective on a radar, the dense base model dashed; None below 3 axes."""
    mine = seeds.filter((pl.col("label") == label) & pl.col("mean").is_not_null())
    axes_names = [p for p in PERSPECTIVE_ORDER if p in set(mine["perspective"].to_list())]
    if len(axes_names) < 3:
        return None
    fig = _new_figure(4.5, 4.5)
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * i / len(axes_names) for i in range(len(axes_names))]

    def trace(values: dict[str, float], **style: object) -> None:
        ys = [values.get(p, 0.0) for p in axes_names]
        ax.plot([*angles, angles[0]], [*ys, ys[0]], **style)  # type: ignore[arg-type]

    means = dict(zip(mine["perspective"].to_list(), mine["mean"].to_list(), strict=True))
    trace(means, marker="o", label=label)
    if mine["method"][0] != "dense":
        dense = {p: v for p in axes_names if (v := _dense(seeds, p)) is not None}
        if dense:
            trace(dense, linestyle="--", color="grey", label="dense")
    ax.set_xticks(angles, axes_names, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_title(label)
    ax.legend(loc="lower right", fontsize=8, bbox_to_anchor=(1.15, -0.1))
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "checkpoint"


def write_plots(seeds: pl.DataFrame, folder: Path) -> list[Path]:
    """Write every plot that has data to ``folder`` as PNG and SVG; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Figure | None]] = [
        ("score_vs_bits", bits_figure(seeds)),
        ("score_vs_sparsity", sparsity_figure(seeds)),
    ]
    for label in seeds["label"].unique(maintain_order=True).to_list():
        figures.append((f"radar_{_slug(label)}", radar_figure(seeds, label)))
    from matplotlib import rc_context

    written: list[Path] = []
    for stem, fig in figures:
        if fig is None:
            log.info("plot %s skipped: not enough data", stem)
            continue
        for ext in ("png", "svg"):
            path = folder / f"{stem}.{ext}"
            # SVG text stays text (smaller, and no glyph ids that clash when several SVGs share one HTML page)
            rendered = io.BytesIO()
            with rc_context({"svg.fonttype": "none"}):
                fig.savefig(rendered, format=ext, dpi=110)
            atomic_write_bytes(path, rendered.getvalue())  # a full disk leaves the previous plot as it was
            written.append(path)
    return written
