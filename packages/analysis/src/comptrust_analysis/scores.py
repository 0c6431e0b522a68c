"""Per-perspective scores from records: the Scores contract of DESIGN.md, one row per (run, endpoint, perspective)."""

from __future__ import annotations

from typing import Literal

import polars as pl

from comptrust_analysis.fairness import fairness_scores
from comptrust_analysis.load import LoadedRun, checkpoint_table

__all__ = ["SCORE_COLUMNS", "Variant", "perspective_scores", "side_by_side"]

Variant = Literal["dt-main", "dt-compressed-trust"]

SCORE_COLUMNS = [
    "run",
    "endpoint",
    "checkpoint",
    "method",
    "bits",
    "sparsity",
    "perspective",
    "score",
    "refusal_rate",
    "n",
    "n_scored",
    "errors",
    "variant",
]


def _item_score(variant: str) -> pl.Expr:
    """This record's ``score`` field under ``variant`` (a field without a variant applies to every variant)."""
    el = pl.element()
    match = (el.struct.field("name") == "score") & (
        (el.struct.field("variant") == variant) | el.struct.field("variant").is_null()
    )
    return pl.col("scores").list.eval(el.filter(match).struct.field("value")).list.first()


def perspective_scores(runs: list[LoadedRun], variant: Variant = "dt-main") -> pl.DataFrame:
    """Score (0-100, mean item score), refusal rate (% of ok records) and counts per run, endpoint and perspective.

    Fairness is scored from group statistics (:mod:`comptrust_analysis.fairness`), not item means. Perspectives
    whose task attaches no ``score`` yet (toxicity until a toxicity scorer is configured) get a null score but still
    report their refusal rate and counts.
    """
    if not runs:
        return pl.DataFrame(schema=dict.fromkeys(SCORE_COLUMNS, pl.String))
    records = pl.concat([r.records.with_columns(run=pl.lit(r.path.name)) for r in runs])
    ok = pl.col("status") == "ok"
    table = (
        records.select("run", "endpoint", "perspective", "status", "refusal", "scores")
        .with_columns(item_score=pl.when(ok).then(_item_score(variant)))
        .group_by("run", "endpoint", "perspective")
        .agg(
            score=pl.col("item_score").mean() * 100,
            refusal_rate=pl.col("refusal").filter(ok).cast(pl.Float64).mean() * 100,
            n=ok.sum(),
            n_scored=pl.col("item_score").is_not_null().sum(),
            errors=(~ok).sum(),
        )
        .join(fairness_scores(records, variant), on=["run", "endpoint"], how="left")
        .with_columns(
            score=pl.when(pl.col("perspective") == "fairness").then("fairness_score").otherwise("score"),
            n_scored=pl.when(pl.col("perspective") == "fairness").then("n").otherwise("n_scored"),
        )
        .drop("fairness_score")
        .collect()
    )
    meta = checkpoint_table(runs).select("run", "endpoint", "checkpoint", "method", "bits", "sparsity")
    return (
        table.join(meta, on=["run", "endpoint"], how="left")
        .with_columns(
            checkpoint=pl.coalesce("checkpoint", "endpoint"),
            variant=pl.lit(variant),
            n=pl.col("n").cast(pl.Int64),
            n_scored=pl.col("n_scored").cast(pl.Int64),
            errors=pl.col("errors").cast(pl.Int64),
        )
        .select(SCORE_COLUMNS)
        .sort("run", "endpoint", "perspective")
    )


def side_by_side(scores: pl.DataFrame) -> pl.DataFrame:
    """Perspectives as rows, one column per checkpoint: ``score (refusal %)``, for comparing checkpoints at a glance."""
    cell = (
        pl.when(pl.col("score").is_null()).then(pl.lit("n/a")).otherwise(pl.col("score").round(1).cast(pl.String))
        + pl.lit(" (")
        + pl.col("refusal_rate").round(0).cast(pl.Int64).cast(pl.String).fill_null("-")
        + pl.lit("%)")
    )
    labelled = scores.with_columns(cell=cell, column=pl.col("checkpoint"))
    order = labelled.select("column").unique(maintain_order=True).to_series().to_list()
    wide = labelled.pivot(on="column", index="perspective", values="cell", aggregate_function="first")
    return wide.select("perspective", *order).sort("perspective")
