"""``--compare paper``: the Decoding Compressed Trust paper's LLaMA-2-13b-chat numbers beside ours.

The numbers ship as package data (``data/paper_llama2_13b_chat.csv``; its header names the source: the DecodingTrust
leaderboard CSV, commit 28b4750). Matching rule: a configuration of ours matches the paper's rows with the same
method name (case-insensitive), the same bits (both absent for pruning), and the same N:M pattern; an unstructured
configuration matches on its requested sparsity (rounded to 0.01; the paper has no unstructured chat-model rows).
Group size is not matched (the leaderboard names it for one row only). Where the paper has several calibration seeds
of one configuration, their mean and standard deviation are shown. The paper's ``avg_dt6`` and ``avg_present`` are
recomputed from its perspective scores per row, as ours are per checkpoint.
"""

from __future__ import annotations

import logging
from importlib.resources import files

import polars as pl

from comptrust_analysis.seeds import AGGREGATES, AVG_DT6, AVG_DT8, AVG_PRESENT, DT6_PERSPECTIVES, PERSPECTIVE_ORDER

__all__ = ["PAPER_SOURCE", "compare_paper", "compare_wide", "paper_table"]

log = logging.getLogger(__name__)

PAPER_FILE = "paper_llama2_13b_chat.csv"
PAPER_SOURCE = (
    "Decoding Compressed Trust, LLaMA-2-13b-chat: DecodingTrust leaderboard CSV "
    "(DecodingTrust/decodingtrust.github.io, leaderboard/static/csv/leaderboard.csv, commit 28b4750)"
)
_MATCH = ["method_key", "bits", "pattern", "sparsity_key"]


def _match_keys(method: str, sparsity: str, pattern: str) -> list[pl.Expr]:
    unstructured = pl.col(pattern).is_null() | (pl.col(pattern) == "unstructured")
    return [
        pl.col(method).str.to_lowercase().alias("method_key"),
        pl.when(unstructured).then(None).otherwise(pl.col(pattern)).alias("pattern"),
        pl.when(unstructured).then(pl.col(sparsity).round(2)).alias("sparsity_key"),
    ]


def paper_table() -> pl.DataFrame:
    """The shipped paper rows in long form: one row per (paper row, perspective), aggregates included."""
    source = files("comptrust_analysis").joinpath("data", PAPER_FILE)
    wide = pl.read_csv(source.read_bytes(), comment_prefix="#")
    wide = wide.with_columns(
        pl.mean_horizontal(*PERSPECTIVE_ORDER).alias(AVG_PRESENT),
        pl.mean_horizontal(*PERSPECTIVE_ORDER).alias(AVG_DT8),
        pl.mean_horizontal(*DT6_PERSPECTIVES).alias(AVG_DT6),
    )
    return wide.unpivot(
        index=["row", "method", "bits", "group_size", "pattern", "sparsity", "seed"],
        on=[*PERSPECTIVE_ORDER, *AGGREGATES],
        variable_name="perspective",
        value_name="score",
    )


def compare_paper(seeds: pl.DataFrame) -> pl.DataFrame:
    """One row per (our configuration with a matching paper row, perspective): ours and the paper's mean ± std.

    ``seeds`` is :func:`~comptrust_analysis.seeds.seed_summary`'s table. ``diff`` = ours − paper.
    """
    paper = (
        paper_table()
        .with_columns(_match_keys("method", "sparsity", "pattern"))
        .group_by(*_MATCH, "perspective")
        .agg(
            paper_rows=pl.col("row").unique().sort().str.join("; "),
            paper_n=pl.len().cast(pl.Int64),
            paper_mean=pl.col("score").mean(),
            paper_std=pl.col("score").std(ddof=1),
        )
    )
    ours = seeds.with_columns(_match_keys("method", "target_sparsity", "pattern"))
    joined = ours.join(paper, on=[*_MATCH, "perspective"], how="left", nulls_equal=True)
    unmatched = joined.filter(pl.col("paper_n").is_null() & (pl.col("method") != "dense"))["label"].unique().sort()
    if unmatched.len():
        log.info("no paper row for: %s", ", ".join(unmatched.to_list()))
    return (
        joined.filter(pl.col("paper_n").is_not_null())
        .with_columns(diff=pl.col("mean") - pl.col("paper_mean"))
        .select(
            "label",
            "base_model",
            "perspective",
            ours_n=pl.col("n_seeds"),
            ours_mean=pl.col("mean"),
            ours_std=pl.col("std"),
            paper_n="paper_n",
            paper_mean="paper_mean",
            paper_std="paper_std",
            diff="diff",
            paper_rows="paper_rows",
        )
    )


def _fmt(mean: object, std: object) -> str:
    if not isinstance(mean, float):
        return "n/a"
    return f"{mean:.1f}" + (f"±{std:.1f}" if isinstance(std, float) else "")


def compare_wide(cmp: pl.DataFrame) -> pl.DataFrame:
    """Perspectives as rows, one column per configuration: ``ours | paper`` (mean±std over seeds)."""
    if cmp.is_empty():
        return pl.DataFrame(schema={"perspective": pl.String})
    cells = [
        f"{_fmt(r['ours_mean'], r['ours_std'])} | {_fmt(r['paper_mean'], r['paper_std'])}"
        for r in cmp.iter_rows(named=True)
    ]
    labelled = cmp.with_columns(cell=pl.Series(cells, dtype=pl.String))
    order = labelled.select("label").unique(maintain_order=True).to_series().to_list()
    wide = labelled.pivot(on="label", index="perspective", values="cell", aggregate_function="first")
    return wide.select("perspective", *order)
