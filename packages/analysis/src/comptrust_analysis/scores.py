"""Per-perspective scores from records: the Scores contract of DESIGN.md, one row per (run, endpoint, perspective)."""

from __future__ import annotations

import logging
from typing import Literal, get_args

import polars as pl
from comptrust_core import ConfigError, RunDirError

from comptrust_analysis.fairness import fairness_scores
from comptrust_analysis.load import LoadedRun, checkpoint_table

__all__ = ["SCORER_VARIANTS", "SCORE_COLUMNS", "Variant", "check_variants", "perspective_scores", "side_by_side"]

log = logging.getLogger(__name__)

Variant = Literal["dt-main", "dt-compressed-trust"]
SCORER_VARIANTS: tuple[str, ...] = get_args(Variant)

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


_COLUMNS = ["run", "endpoint", "perspective", "sub_scenario", "status", "refusal", "scores", "attributes"]


def _item_score(variant: str) -> pl.Expr:
    """This record's ``score`` field under ``variant`` (a field without a variant applies to every variant)."""
    el = pl.element()
    match = (el.struct.field("name") == "score") & (
        (el.struct.field("variant") == variant) | el.struct.field("variant").is_null()
    )
    return pl.col("scores").list.eval(el.filter(match).struct.field("value")).list.first()


def check_variants(records: pl.LazyFrame, variant: str) -> None:
    """Refuse to mix scorer variants silently.

    Only the scorer variants (:data:`SCORER_VARIANTS`) count: other ``variant`` values (e.g. the ``broad`` refusal
    detector's field) are not scorers. Score fields without a variant apply to every variant. Where a (run,
    endpoint, perspective) carries variant-specific fields but none under ``variant``, that is a
    :class:`ConfigError` naming the variants it has; where only some of its records carry ``variant`` (others only
    another variant), a warning is logged.
    """
    el = pl.element()
    per_record = records.filter(pl.col("status") == "ok").select(
        "run",
        "endpoint",
        "perspective",
        variants=pl.col("scores")
        .list.eval(el.struct.field("variant").filter(el.struct.field("variant").is_in(SCORER_VARIANTS)))
        .list.unique(),
    )
    per_record = per_record.filter(pl.col("variants").list.len() > 0).with_columns(
        has=pl.col("variants").list.contains(variant)
    )
    groups = (
        per_record.group_by("run", "endpoint", "perspective")
        .agg(variants=pl.col("variants").explode().unique().sort(), n=pl.len(), with_variant=pl.col("has").sum())
        .sort("run", "endpoint", "perspective")
        .collect()
    )
    for g in groups.iter_rows(named=True):
        where = f"run {g['run']}, endpoint {g['endpoint']}, perspective {g['perspective']}"
        if g["with_variant"] == 0:
            raise ConfigError(
                f"{where} was scored under scorer variant(s) {', '.join(g['variants'])}, not {variant}: "
                f"pass --variant {g['variants'][0]}, or rescore it; analyze never mixes variants"
            )
        if g["with_variant"] < g["n"]:
            log.warning(
                "%s: %d of %d records carry no %s score fields (scored under %s); they count as unscored",
                where,
                g["n"] - g["with_variant"],
                g["n"],
                variant,
                ", ".join(v for v in g["variants"] if v != variant),
            )


def perspective_scores(runs: list[LoadedRun], variant: Variant = "dt-main") -> pl.DataFrame:
    """Score (0-100, mean item score), refusal rate (% of ok records) and counts per run, endpoint and perspective.

    Fairness is scored from group statistics (:mod:`comptrust_analysis.fairness`), not item means. Perspectives
    whose task attaches no ``score`` yet (toxicity until a toxicity scorer is configured) get a null score but still
    report their refusal rate and counts.
    """
    if not runs:
        return pl.DataFrame(schema=dict.fromkeys(SCORE_COLUMNS, pl.String))
    lazy = pl.concat([r.records.with_columns(run=pl.lit(r.path.name)) for r in runs])
    try:
        # one pass over the files (dedupe included), then every aggregate on the columns it needs, in memory:
        # several lazy queries over the same scan would each repeat the deduplication
        records = lazy.select(_COLUMNS).collect().lazy()
        check_variants(records, variant)
        table = _aggregate(records, variant)
    except pl.exceptions.PolarsError as exc:
        names = ", ".join(str(r.path) for r in runs)
        raise RunDirError(f"the records in {names} cannot be read ({exc}); a file is damaged") from exc
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


def _aggregate(records: pl.LazyFrame, variant: str) -> pl.DataFrame:
    ok = pl.col("status") == "ok"
    return (
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
