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

import warnings
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
    "finish_estimates",
    "linear_estimates",
    "linear_parts",
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
        component=attribute("dt_component").fill_null("all").cast(pl.Categorical),
        group=pl.when(dt).then(group).otherwise(pl.lit("")).cast(pl.Categorical),
        set=pl.when(dt).then(pl.coalesce(attribute("dt_set"), group)).otherwise(pl.lit("")).cast(pl.Categorical),
        # hashed: two clusters that collided would only merge, which widens an interval, never narrows it
        cluster=cluster_id().hash(),
        unit=pl.concat_str("task", "item_id", pl.col("sample_index").cast(pl.String), separator="\x00"),
        value=field("score", variant),
        refused=refused(variant),
    )


def linear_parts(
    rows: pl.LazyFrame, keys: list[str], value: str, *, with_clusters: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(cells, clusters) of the linearized estimator: per cell (``keys``) its ``estimate`` (Σ w·x), ``n``, ``groups``
    and ``ss`` (Σ over clusters of u²); with ``with_clusters``, per (cell, cluster) its ``u = Σ w·(x - x̄_group)``,
    its total ``t = Σ w·x`` and weight ``wsum = Σ w`` (what the sign-flip test flips).

    Each record's weight depends on its group alone (``w_g``, the share DecodingTrust's mean of means gives the group,
    over its ``n_g`` records), so everything is computed from per-(group, cluster) sums and counts: ``u_c = Σ_g w_g
    (S_cg - n_cg · x̄_g)``; no per-record window is needed over millions of rows. Cells and groups are keyed by a
    64-bit hash while aggregating (a few thousand of them: a collision is as likely as 1 in 10^12). The large
    intermediate frames are collected once each (a lazy plan would compute them again for each use)."""
    grp = ["component", "set", "group"]
    wanted = (
        rows.filter(pl.col(value).is_not_null() & (pl.col("component") != EXCLUDED))
        .with_columns(_cell=pl.struct(keys).hash(), _grp=pl.struct(grp).hash())
        .collect()
    )
    ids = ["_cell", "_grp"]
    per = wanted.lazy().group_by(*ids, "cluster").agg(s=pl.col(value).sum(), k=pl.len()).collect()
    names = wanted.lazy().group_by(ids).agg(*(pl.col(c).first() for c in [*keys, *grp])).collect()
    del wanted
    weights = pl.DataFrame(
        {
            "perspective": [p for p, _ in COMPONENT_WEIGHTS],
            "component": [c for _, c in COMPONENT_WEIGHTS],
            "_cw": list(COMPONENT_WEIGHTS.values()),
        }
    )
    groups = (
        per.lazy()
        .group_by(ids)
        .agg(n_g=pl.col("k").sum(), sum_g=pl.col("s").sum())
        .join(names.lazy(), on=ids, how="left")
        .with_columns(pl.col("component").cast(pl.String), pl.col("set").cast(pl.String))
        .join(weights.lazy(), on=["perspective", "component"], how="left")
        .with_columns(
            _cw=pl.col("_cw").fill_null(1.0),
            _groups=pl.len().over("_cell", "component", "set"),
            _sets=pl.col("set").n_unique().over("_cell", "component"),
        )
        .collect()
    )
    # component weights renormalized over the components the cell has (privacy without one part)
    totals = (
        groups.group_by("_cell", "component")
        .agg(_cw=pl.col("_cw").first())
        .group_by("_cell")
        .agg(_cw_sum=pl.col("_cw").sum())
    )
    groups = groups.join(totals, on="_cell", how="left").with_columns(
        w=pl.col("_cw") / pl.col("_cw_sum") / pl.col("_sets") / pl.col("_groups") / pl.col("n_g"),
        mean_g=pl.col("sum_g") / pl.col("n_g"),
    )
    u = pl.col("w") * (pl.col("s") - pl.col("k") * pl.col("mean_g"))
    by_cluster = (
        per.lazy()
        .join(groups.lazy().select(*ids, "w", "mean_g"), on=ids, how="left")
        .group_by("_cell", "cluster")
        .agg(u=u.sum(), t=(pl.col("w") * pl.col("s")).sum(), wsum=(pl.col("w") * pl.col("k")).sum())
        .collect()
    )
    del per
    sums = by_cluster.group_by("_cell").agg(ss=(pl.col("u") ** 2).sum(), clusters=pl.len())
    cell_names = groups.group_by("_cell").agg(*(pl.col(c).first() for c in keys))
    cells = (
        groups.group_by("_cell")
        .agg(estimate=(pl.col("w") * pl.col("sum_g")).sum(), n=pl.col("n_g").sum(), groups=pl.len())
        .join(sums, on="_cell", how="left")
        .join(cell_names, on="_cell", how="left")
        .drop("_cell")
    )
    clusters = by_cluster.join(cell_names, on="_cell", how="left").drop("_cell") if with_clusters else None
    return cells, clusters


def finish_estimates(cells: pl.DataFrame) -> pl.DataFrame:
    """:func:`linear_parts`' cells with their CR1 standard error ``se``."""
    g, n, k = pl.col("clusters"), pl.col("n"), pl.col("groups")
    factor = pl.when((g > 1) & (n > k)).then(g / (g - 1) * (n - 1) / (n - k))
    return (
        cells.with_columns(se=(factor * pl.col("ss")).sqrt())
        .drop("ss")
        .with_columns(pl.col("n").cast(pl.Int64), pl.col("clusters").cast(pl.Int64), pl.col("groups").cast(pl.Int64))
    )


def linear_estimates(rows: pl.LazyFrame, keys: list[str], value: str) -> pl.DataFrame:
    """Per cell (``keys``): ``estimate`` (Σ w·x, 0-1 scale), ``se`` (CR1 clustered), ``n`` (records), ``clusters``,
    ``groups``; ``rows`` as :func:`structured_rows` gives them (any rows with component, set, group, cluster and
    ``value`` columns)."""
    cells, _ = linear_parts(rows, keys, value)
    return finish_estimates(cells)


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

    with warnings.catch_warnings():  # a degenerate statistic (every resample equal) gives a NaN interval
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
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
