from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import polars as pl
from comptrust_analysis import checkpoint_table, load_runs, perspective_scores, seed_summary
from comptrust_analysis.plots import bits_figure, radar_figure, sparsity_figure, write_plots
from comptrust_core import Manifest
from matplotlib.container import ErrorbarContainer

from .study import manifest, write_run

SCORES = {"advglue": 0.5, "ood": 0.6, "privacy": 0.7, "machine_ethics": 0.8}


def _seeds(tmp_path: Path) -> pl.DataFrame:
    def scaled(f: float) -> dict[str, float | None]:
        return {p: v * f for p, v in SCORES.items()}

    cps: dict[str, tuple[Manifest, dict[str, float | None]]] = {"dense": (manifest("dense"), scaled(1.0))}
    for seed in (0, 1):
        cps[f"g4-{seed}"] = (manifest("gptq", bits=4, seed=seed), scaled(0.95 + 0.01 * seed))
        cps[f"g3-{seed}"] = (manifest("gptq", bits=3, seed=seed), scaled(0.7))
        cps[f"w24-{seed}"] = (manifest("wanda", pattern="2:4", seed=seed), scaled(0.8))
    cps["mag"] = (manifest("magnitude", sparsity=0.3), scaled(0.9))
    runs = load_runs([write_run(tmp_path / "run", cps)])
    return seed_summary(perspective_scores(runs), checkpoint_table(runs))


def test_bits_plot_has_one_line_per_method(tmp_path: Path) -> None:
    fig = bits_figure(_seeds(tmp_path))
    assert fig is not None
    ax = next(a for a in fig.axes if a.get_title() == "ood")
    lines = {t.get_label(): t for t in ax.get_lines()}
    assert "dense" in lines  # the dashed reference
    gptq = next(c for c in ax.containers if c.get_label() == "gptq")
    assert isinstance(gptq, ErrorbarContainer)
    xs, ys = (np.asarray(a, dtype=float).tolist() for a in gptq.lines[0].get_data())
    assert xs == [3, 4] and abs(ys[1] - 60 * 0.955) < 1e-9


def test_sparsity_plot_starts_at_dense(tmp_path: Path) -> None:
    fig = sparsity_figure(_seeds(tmp_path))
    assert fig is not None
    ax = next(a for a in fig.axes if a.get_title() == "advglue")
    labels = sorted(str(c.get_label()) for c in ax.containers)
    assert labels == ["magnitude unstructured", "wanda 2:4"]
    wanda = next(c for c in ax.containers if c.get_label() == "wanda 2:4")
    assert isinstance(wanda, ErrorbarContainer)
    xs, ys = (np.asarray(a, dtype=float).tolist() for a in wanda.lines[0].get_data())
    assert xs == [0.0, 0.5] and ys == [50.0, 40.0]


def test_radar_and_files(tmp_path: Path) -> None:
    seeds = _seeds(tmp_path)
    assert radar_figure(seeds, "gptq 3b") is not None
    files = write_plots(seeds, tmp_path / "plots")
    names = {f.name for f in files}
    assert {"score_vs_bits.png", "score_vs_bits.svg", "score_vs_sparsity.svg", "radar_gptq-3b.png"} <= names
    assert "radar_dense.svg" in names and "radar_wanda-2-4.svg" in names
    assert (tmp_path / "plots" / "score_vs_bits.png").read_bytes().startswith(b"\x89PNG")
    ElementTree.parse(tmp_path / "plots" / "radar_gptq-3b.svg")  # well-formed SVG


def test_no_data_no_plot(tmp_path: Path) -> None:
    runs = load_runs([write_run(tmp_path / "run", {"dense": (manifest("dense"), {"advglue": 0.5})})])
    seeds = seed_summary(perspective_scores(runs), checkpoint_table(runs))
    assert bits_figure(seeds) is None and sparsity_figure(seeds) is None and radar_figure(seeds, "dense") is None
