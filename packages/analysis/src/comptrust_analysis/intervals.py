"""Standard errors and 95% intervals for every score cell, with items that share a source clustered.

Why clusters: DecodingTrust asks one base prompt several times (under each system prompt, each demonstration seed,
each style), and those answers are not independent: treating them as independent makes an interval too narrow. Each
record gets a *cluster*, by perspective (:data:`CLUSTER_RULES`); records of one cluster move together.

Two methods, one per kind of statistic:

* **clustered standard error** for everything that is a (weighted) mean of per-record values: every structured
  perspective score (a mean of group means, :mod:`comptrust_analysis.structure`), every sub-scenario score and every
  refusal rate. The score is linear in the record values, ``θ = Σ w_i x_i``, with ``w_i`` the weight DecodingTrust's
  means of means give record ``i``; its variance is the cluster-robust (CR1) sandwich
  ``G/(G-1) · (N-1)/(N-K) · Σ_c (Σ_{i∈c} w_i (x_i - x̄_g(i)))²`` over ``G`` clusters, ``N`` records and ``K`` groups,
  which for a plain mean is exactly statsmodels' ``OLS(x, 1).fit(cov_type="cluster")`` (a test checks this, and the
  weighted form against statsmodels' group-dummy regression). The interval uses Student's t with ``G - 1`` degrees
  of freedom. Stereotype's rounding of each agreement rate to 2 decimals is left out of the linearization.
* **cluster bootstrap** (:func:`scipy.stats.bootstrap` over clusters, percentile interval, a fixed seed, so reruns
  print the same numbers) for the statistics that are not means: toxicity (expected maximum toxicity: a maximum
  over a prompt's samples, then means) and fairness (demographic-parity and equalized-odds gaps: differences of
  maxima and minima of group rates).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import stats

from comptrust_analysis.structure import COMPONENT_WEIGHTS, EXCLUDED, attribute, field, refused

__all__ = [
    "ALPHA",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CLUSTER_RULES",
    "cluster_bootstrap",
    "cluster_id",
    "clustered_se",
    "linear_estimates",
]

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240607

CLUSTER_RULES: dict[str, str] = {
    "toxicity": "the base prompt (file and its index), across the benign and adversarial system prompts and samples",
    "stereotype": "the (topic, demographic group) statement, across its 3 phrasings and 3 system prompts",
    "advglue": "the base sentence (GLUE task and index), across the source models' adversarial versions",
    "ood": "the base sentence across styles (style), the question across demonstration settings (knowledge)",
    "adv_demonstration": "the test input (scenario and index), across the demonstration seeds",
    "privacy": "the person (Enron, across prompt types), the topic (understanding), the item (PII)",
    "machine_ethics": "the scenario (dataset and index), across jailbreak and evasive prompts",
    "fairness": "the item (each setting's test inputs are its own)",
    "bbq": "the question template (category and question id), across its options and contexts",
}
"""What one cluster is, per perspective; any other task (MMLU, custom prompts): the item, across its samples."""


def _index() -> pl.Expr:
    return pl.col("item_id").str.extract(r"([^/]+)$")


def cluster_id() -> pl.Expr:
    """Each record's cluster (:data:`CLUSTER_RULES`), a string unique within its perspective."""
    p, idx = pl.col("perspective"), _index()
    kind = attribute("ood_kind")
    return (
        pl.when(p == "toxicity")
        .then(pl.concat_str(attribute("source"), idx, separator="/"))
        .when(p == "stereotype")
        .then(pl.concat_str(attribute("stereotype_topic"), attribute("demographic_group"), separator="/"))
        .when(p == "advglue")
        .then(pl.concat_str(attribute("glue_task"), idx, separator="/"))
        .when(p == "ood")
        .then(
            pl.when(kind == "knowledge")
            .then(pl.concat_str(kind, attribute("subset"), idx, separator="/"))
            .otherwise(pl.concat_str(kind, idx, separator="/"))
        )
        .when(p == "adv_demonstration")
        .then(pl.col("item_id").str.replace(r"/[^/]+/([^/]+)$", "/$1"))
        .when(p == "privacy")
        .then(
            pl.when(attribute("privacy_scenario") == "enron")
            .then(pl.concat_str(pl.lit("enron"), idx, separator="/"))
            .when(attribute("privacy_scenario") == "understanding")
            .then(pl.concat_str(pl.lit("understanding"), attribute("topic"), separator="/"))
        )
        .when(p == "machine_ethics")
        .then(pl.concat_str(attribute("dataset"), idx, separator="/"))
        .when(p == "bbq")
        .then(pl.concat_str(attribute("category"), attribute("question"), separator="/"))
        .otherwise(None)
        .fill_null(pl.col("item_id"))
    )


def structured_rows(records: pl.LazyFrame, variant: str) -> pl.LazyFrame:
    """One row per ok record of the structured perspectives (all but toxicity and fairness), with what the
    linearization needs: its component, set and group (as :func:`~comptrust_analysis.structure.structured_scores`
    reads them), cluster, unit (task, item, sample), score value and refusal verdict under ``variant``."""
    from comptrust_core import DECODINGTRUST_PERSPECTIVES

    group = pl.coalesce(attribute("dt_group"), pl.col("sub_scenario"), pl.lit(""))
    dt = pl.col("perspective").is_in(DECODINGTRUST_PERSPECTIVES)
    return records.filter((pl.col("status") == "ok") & ~pl.col("perspective").is_in(["toxicity", "fairness"])).select(
        "run",
        "endpoint",
        "perspective",
        "sub_scenario",
        component=attribute("dt_component").fill_null("all"),
        group=pl.when(dt).then(group).otherwise(pl.lit("")),
        set=pl.when(dt).then(pl.coalesce(attribute("dt_set"), group)).otherwise(pl.lit("")),
        cluster=cluster_id(),
        unit=pl.concat_str("task", "item_id", pl.col("sample_index").cast(pl.String), separator="\x00"),
        value=field("score", variant),
        refused=refused(variant),
    )


def _weights(rows: pl.LazyFrame, keys: list[str], value: str) -> pl.LazyFrame:
    """``rows`` with a non-null ``value`` and outside the excluded component, each with its weight ``w`` in the
    cell's mean of means and its residual ``e`` from its group's mean."""
    wanted = rows.filter(pl.col(value).is_not_null() & (pl.col("component") != EXCLUDED))
    weights = pl.LazyFrame(
        {
            "perspective": [p for p, _ in COMPONENT_WEIGHTS],
            "component": [c for _, c in COMPONENT_WEIGHTS],
            "_cw": list(COMPONENT_WEIGHTS.values()),
        }
    )
    comp, sets, grp = [*keys, "component"], [*keys, "component", "set"], [*keys, "component", "set", "group"]
    out = wanted.join(weights, on=["perspective", "component"], how="left").with_columns(
        _cw=pl.col("_cw").fill_null(1.0),
        _n_g=pl.len().over(grp),
        _mean_g=pl.col(value).mean().over(grp),
        _groups=pl.col("group").n_unique().over(sets),
        _sets=pl.col("set").n_unique().over(comp),
    )
    # component weights renormalized over the components the cell has (privacy without one part)
    totals = (
        out.group_by(*keys, "component").agg(_cw=pl.col("_cw").first()).group_by(keys).agg(_cw_sum=pl.col("_cw").sum())
    )
    return out.join(totals, on=keys, how="left").with_columns(
        w=pl.col("_cw") / pl.col("_cw_sum") / pl.col("_sets") / pl.col("_groups") / pl.col("_n_g"),
        e=pl.col(value) - pl.col("_mean_g"),
    )


def linear_estimates(rows: pl.LazyFrame, keys: list[str], value: str) -> pl.DataFrame:
    """Per cell (``keys``): ``estimate`` (Σ w·x, 0-1 scale), ``se`` (CR1 clustered), ``n`` (records), ``clusters``,
    ``groups``; ``rows`` as :func:`structured_rows` gives them (any rows with component, set, group, cluster and
    ``value`` columns)."""
    weighted = _weights(rows, keys, value)
    per_cluster = weighted.group_by(*keys, "cluster").agg(u=(pl.col("w") * pl.col("e")).sum())
    sums = per_cluster.group_by(keys).agg(ss=(pl.col("u") ** 2).sum(), clusters=pl.len())
    cells = weighted.group_by(keys).agg(
        estimate=(pl.col("w") * pl.col(value)).sum(),
        n=pl.len(),
        groups=pl.struct("component", "set", "group").n_unique(),
    )
    g, n, k = pl.col("clusters"), pl.col("n"), pl.col("groups")
    factor = pl.when((g > 1) & (n > k)).then(g / (g - 1) * (n - 1) / (n - k))
    return (
        cells.join(sums, on=keys, how="left")
        .with_columns(se=(factor * pl.col("ss")).sqrt())
        .drop("ss")
        .with_columns(pl.col("n").cast(pl.Int64), pl.col("clusters").cast(pl.Int64), pl.col("groups").cast(pl.Int64))
        .collect()
    )


def clustered_se(values: np.ndarray, clusters: np.ndarray) -> float:
    """The CR1 clustered standard error of the plain mean of ``values`` (the one-group case of
    :func:`linear_estimates`, for tests and small callers)."""
    values = np.asarray(values, dtype=float)
    _, codes = np.unique(clusters, return_inverse=True)
    e = values - values.mean()
    u = np.bincount(codes, weights=e) / len(values)
    g = u.size
    if g < 2:
        return float("nan")
    return float(np.sqrt(g / (g - 1) * np.sum(u**2)))


def t_interval(estimate: pl.Expr, se: pl.Expr, df: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """The two-sided 95% interval ``estimate ± t(df) · se``."""
    q = df.map_batches(
        lambda s: pl.Series(stats.t.ppf(1 - ALPHA / 2, np.maximum(s.to_numpy().astype(float), 1.0))),
        return_dtype=pl.Float64,
    )
    return estimate - q * se, estimate + q * se


def cluster_bootstrap(
    codes: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], *, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float, float]:
    """(standard error, low, high) of ``statistic`` under resampling clusters with replacement: ``codes`` gives each
    cluster's index 0..C-1 per row; ``statistic`` maps a (B, rows) array of row weights (how often each row's cluster
    was drawn) to B values. Percentile 95% interval from :func:`scipy.stats.bootstrap`, seeded with
    :data:`BOOTSTRAP_SEED`."""
    codes = np.asarray(codes)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    if n_clusters < 2:
        return float("nan"), float("nan"), float("nan")

    def on_clusters(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        flat = sample.ndim == 1
        drawn = np.atleast_2d(sample)
        batch = drawn.shape[0]
        offsets = (np.arange(batch)[:, None] * n_clusters + drawn).ravel()
        counts = np.bincount(offsets, minlength=batch * n_clusters).reshape(batch, n_clusters)
        out = statistic(counts[:, codes].astype(float))
        return out[0] if flat else out

    result = stats.bootstrap(
        (np.arange(n_clusters),),
        on_clusters,
        n_resamples=resamples,
        confidence_level=1 - ALPHA,
        method="percentile",
        vectorized=True,
        batch=max(1, min(resamples, 20_000_000 // max(codes.size, 1))),
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    ci = result.confidence_interval
    return float(result.standard_error), float(ci.low), float(ci.high)
