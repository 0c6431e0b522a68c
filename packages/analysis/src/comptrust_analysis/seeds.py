"""Across calibration seeds: mean and spread per configuration, and the change against the dense base model.

A *configuration* is everything that identifies a checkpoint except its calibration seed: base model (by content
hash), method, bits, group size, requested sparsity and N:M pattern. Checkpoints of one configuration are its seeds.

Flag rule (stated in every report this module feeds): the change Δ = mean(configuration) − mean(dense) of a
perspective is flagged when ``|Δ| > 2 · spread``, where ``spread`` is the sample standard deviation (ddof = 1) of
the configuration's seeds, combined in quadrature with the dense model's when the dense model has two or more runs.
A configuration with a single seed has no measured spread: its flag is unknown (null, shown as ``?``), never true.

Three aggregates are added as pseudo-perspectives, computed per checkpoint before averaging over seeds:
``avg_present`` (mean of the DecodingTrust perspective scores present; MMLU and custom tasks stay their own
rows), ``avg_dt8`` (the mean of all 8, the DecodingTrust leaderboard's ``Average`` for dense models; null unless
all 8 have a score) and ``avg_dt6`` (the leaderboard's average for compressed models, over AdvGLUE++, OOD, AdvDemo,
Privacy, Ethics and Fairness, excluding toxicity and stereotype; null unless all six have a score). Across seeds a
perspective's mean leaves out seeds without a score (``n_seeds`` counts all of them); ``avg_dt8`` and ``avg_dt6``
stay null unless every seed has them.
"""

from __future__ import annotations

import polars as pl
from comptrust_core import DECODINGTRUST_PERSPECTIVES

__all__ = [
    "AVG_DT6",
    "AVG_DT8",
    "AVG_PRESENT",
    "CONFIG_KEYS",
    "DT6_PERSPECTIVES",
    "FLAG_FACTOR",
    "PERSPECTIVE_ORDER",
    "config_label",
    "seed_summary",
    "seed_wide",
    "with_aggregates",
]

PERSPECTIVE_ORDER = DECODINGTRUST_PERSPECTIVES
DT6_PERSPECTIVES = ("advglue", "ood", "adv_demonstration", "privacy", "machine_ethics", "fairness")
AVG_PRESENT = "avg_present"
AVG_DT6 = "avg_dt6"
AVG_DT8 = "avg_dt8"
AGGREGATES = (AVG_PRESENT, AVG_DT8, AVG_DT6)
FLAG_FACTOR = 2.0
CI_Z = 1.959963984540054
"""``ci_half``: the half-width of a configuration's mean score's 95% interval, ``CI_Z · sqrt(item_se² + std²/k)``:
the item-level standard error (root mean square over its seeds: they answer the same items, so that noise is
shared) and the spread over its ``k`` seeds; null where the scores carry no standard error (aggregates)."""

CONFIG_KEYS = [
    "base_model",
    "base_hash",
    "method",
    "bits",
    "group_size",
    "target_sparsity",
    "pattern",
    "serving",
    "unknown",
]
"""Group keys; ``unknown`` holds the checkpoint name of an endpoint without a manifest, so those never merge;
``serving`` (engine/dtype) keeps one checkpoint served by two engines two configurations, never two seeds."""


_SORT = ["base_model", "_dense_first", "method", "bits", "target_sparsity", "pattern", "_order"]


def _complete_mean(perspectives: tuple[str, ...]) -> pl.Expr:
    """The mean score over ``perspectives``, null unless every one of them has a score."""
    scores = pl.col("score").filter(pl.col("perspective").is_in(perspectives))
    return pl.when(scores.drop_nulls().len() == len(perspectives)).then(scores.mean())


def with_aggregates(scores: pl.DataFrame) -> pl.DataFrame:
    """``scores`` plus three rows per (run, endpoint): ``avg_present``, ``avg_dt8`` and ``avg_dt6`` (see the module
    docstring)."""
    per_ckpt = scores.group_by("run", "endpoint", maintain_order=True).agg(
        pl.col("score").filter(pl.col("perspective").is_in(PERSPECTIVE_ORDER)).drop_nulls().mean().alias(AVG_PRESENT),
        _complete_mean(PERSPECTIVE_ORDER).alias(AVG_DT8),
        _complete_mean(DT6_PERSPECTIVES).alias(AVG_DT6),
    )
    extra = per_ckpt.unpivot(
        index=["run", "endpoint"], on=list(AGGREGATES), variable_name="perspective", value_name="score"
    )
    return pl.concat([scores, extra], how="diagonal_relaxed")


def config_label(row: dict[str, object]) -> str:
    """A short human name for a configuration, e.g. ``gptq 4b g128`` or ``sparsegpt 2:4 s0.5``."""
    if row.get("method") is None:
        return str(row.get("unknown") or "?")
    parts = [str(row["method"])]
    if row.get("bits") is not None:
        parts.append(f"{row['bits']}b")
    if row.get("group_size") is not None:
        parts.append(f"g{row['group_size']}")
    if row.get("pattern") not in (None, "unstructured"):
        parts.append(str(row["pattern"]))
    sparsity = row.get("target_sparsity")
    if isinstance(sparsity, float) and sparsity > 0:
        parts.append(f"s{sparsity:g}")
    return " ".join(parts)


def _order(perspective: str) -> int:
    if perspective in PERSPECTIVE_ORDER:
        return PERSPECTIVE_ORDER.index(perspective)
    if perspective in AGGREGATES:
        return 100 + AGGREGATES.index(perspective)
    return 50


def seed_summary(scores: pl.DataFrame, checkpoints: pl.DataFrame) -> pl.DataFrame:
    """One row per (configuration, perspective): seeds, mean, std, and the change against the dense base model.

    ``scores`` is :func:`~comptrust_analysis.scores.perspective_scores`'s table; ``checkpoints`` is
    :func:`~comptrust_analysis.load.checkpoint_table`'s.
    """
    meta = checkpoints.with_columns(
        unknown=pl.when(pl.col("method").is_null()).then(pl.col("checkpoint")),
        pattern=pl.when(pl.col("pattern") != "unstructured").then(pl.col("pattern")),
    ).select("run", "endpoint", "calib_seed", *CONFIG_KEYS)
    has_se = "se" in scores.columns
    base = scores.select("run", "endpoint", "perspective", "score", "refusal_rate", *(["se"] if has_se else []))
    rows = with_aggregates(base).join(meta, on=["run", "endpoint"], how="left")
    if not has_se:
        rows = rows.with_columns(se=pl.lit(None, pl.Float64))
    grouped = (
        rows.group_by(*CONFIG_KEYS, "perspective")
        .agg(
            n_seeds=pl.len(),
            seeds=pl.col("calib_seed").drop_nulls().sort().cast(pl.String).str.join(","),
            # avg_dt8/avg_dt6 need every seed complete; elsewhere a seed without a score is left out
            mean=pl.when(pl.col("perspective").first().is_in([AVG_DT8, AVG_DT6]) & pl.col("score").is_null().any())
            .then(None)
            .otherwise(pl.col("score").mean()),
            std=pl.col("score").std(ddof=1),
            min=pl.col("score").min(),
            max=pl.col("score").max(),
            refusal_rate=pl.col("refusal_rate").mean(),
            item_se=(pl.col("se") ** 2).mean().sqrt(),
        )
        .with_columns(n_seeds=pl.col("n_seeds").cast(pl.Int64))
        .with_columns(
            # the seeds answer the same items, so their item-level noise is shared and does not average out
            ci_half=CI_Z * (pl.col("item_se") ** 2 + pl.col("std").fill_null(0.0) ** 2 / pl.col("n_seeds")).sqrt()
        )
    )
    dense = grouped.filter(pl.col("method") == "dense").select(
        "base_hash",
        "serving",
        "perspective",
        dense_mean=pl.col("mean"),
        dense_std=pl.col("std"),
        dense_n=pl.col("n_seeds"),
    )
    spread = pl.when(pl.col("dense_n") >= 2).then((pl.col("std") ** 2 + pl.col("dense_std") ** 2).sqrt())
    # each configuration against the dense base served the same way (vLLM's compressed model against vLLM's dense)
    out = grouped.join(dense, on=["base_hash", "serving", "perspective"], how="left", nulls_equal=True).with_columns(
        delta=pl.when(pl.col("method") != "dense").then(pl.col("mean") - pl.col("dense_mean")),
        spread=spread.otherwise(pl.col("std")),
    )
    out = out.with_columns(
        flag=pl.when(pl.col("delta").is_not_null() & pl.col("spread").is_not_null() & (pl.col("n_seeds") >= 2)).then(
            pl.col("delta").abs() > FLAG_FACTOR * pl.col("spread")
        )
    )
    several = out.select("serving").n_unique() > 1
    labels = [
        config_label(r) + (f" [{r['serving'] or 'unknown engine'}]" if several else "")
        for r in out.iter_rows(named=True)
    ]
    out = out.with_columns(
        label=pl.Series(labels, dtype=pl.String),
        _order=pl.col("perspective").map_elements(_order, return_dtype=pl.Int64),
        _dense_first=pl.col("method") != "dense",
    )
    return (
        out.sort(
            "base_model", "_dense_first", "method", "bits", "target_sparsity", "pattern", "_order", nulls_last=True
        )
        .drop("_order", "_dense_first")
        .select(
            "label",
            *CONFIG_KEYS,
            "perspective",
            "n_seeds",
            "seeds",
            "mean",
            "std",
            "min",
            "max",
            "refusal_rate",
            "ci_half",
            "dense_mean",
            "delta",
            "spread",
            "flag",
        )
    )


def _cell(row: dict[str, object]) -> str:
    mean, std, delta, flag = row["mean"], row["std"], row["delta"], row["flag"]
    if not isinstance(mean, float):
        return "n/a"
    text = f"{mean:.1f}" + (f" ± {std:.1f}" if isinstance(std, float) else "")
    if isinstance(delta, float):
        mark = "?" if flag is None else ("!" if flag else "")
        text += f" (Δ {delta:+.1f}{mark})"
    return text


def seed_wide(summary: pl.DataFrame) -> pl.DataFrame:
    """Perspectives as rows, one column per configuration: ``mean ± std (Δ vs dense, ! flagged, ? one seed)``."""
    if summary.is_empty():
        return pl.DataFrame(schema={"perspective": pl.String})
    multi_base = summary.select("base_hash").n_unique() > 1
    column = pl.col("label")
    if multi_base:
        column = pl.col("base_model").fill_null("?") + pl.lit(": ") + column
    cells = [_cell(r) for r in summary.iter_rows(named=True)]
    labelled = summary.with_columns(cell=pl.Series(cells, dtype=pl.String), column=column)
    order = labelled.select("column").unique(maintain_order=True).to_series().to_list()
    perspectives = labelled.select("perspective").unique().to_series().to_list()
    wide = labelled.pivot(on="column", index="perspective", values="cell", aggregate_function="first")
    ranked = sorted(perspectives, key=lambda p: (_order(p), p))
    rank = pl.DataFrame({"perspective": ranked, "_rank": list(range(len(ranked)))})
    return wide.join(rank, on="perspective").sort("_rank").select("perspective", *order)
