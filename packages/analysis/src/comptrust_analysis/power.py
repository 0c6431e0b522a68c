"""Power before the spend: the smallest change against the dense base a plan can detect, per perspective.

For a paired comparison on ``n`` requests with per-request differences of standard deviation ``sd``, the smallest
true delta a two-sided test at ``alpha`` finds with probability ``power`` is ``es · sd``, ``es`` the standardized
effect size statsmodels' :class:`~statsmodels.stats.power.TTestPower` solves for at that ``n``.

Where ``sd`` comes from: the dense base's own run when the study has one (its score's clustered standard error times
the square root of its records: the spread per request, clustering and DecodingTrust's weights included; the
compressed side is assumed to correlate 0.5 with it, which makes the paired difference's spread equal to one
side's), else :data:`ASSUMED_SD` (0/1 scores that disagree with the dense base on a quarter of the items, each item
independent: optimistic where items cluster).

The level is the one the verdicts and the gate use: a study's pooled deltas are one family, so with ``family`` of
them the test is at ``alpha / family`` (Bonferroni, the first step of Holm's correction). Where the dense base was
measured, the test's unit is the cluster (requests that share a source), and a plan whose clusters cannot reach that
level at all (the sign-flip test of ``G`` clusters gives no p below ``2 / 2^G``) detects no drop, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl
from statsmodels.stats.power import TTestPower

from comptrust_analysis.decide import sign_flip_floor

__all__ = ["ALPHA", "ASSUMED_SD", "POWER", "Detectable", "detectable_drop", "detectable_drops"]

ALPHA = 0.05
POWER = 0.8
ASSUMED_SD = 0.5
"""The spread of a paired per-request difference (on the 0-1 scale) where nothing is measured yet."""


@dataclass(frozen=True)
class Detectable:
    perspective: str
    requests: int
    drop: float | None
    """Score points (0-100); None when it cannot be told (fewer than 2 requests)."""
    source: str


def detectable_drop(requests: int, sd: float, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true change (score points) a paired two-sided test finds with ``power`` on ``requests``
    independent units (clusters) whose paired differences spread ``sd`` (0-1 scale)."""
    if requests < 2 or not sd > 0 or sign_flip_floor(requests) > alpha:
        return None
    es = TTestPower().solve_power(effect_size=None, nobs=requests, alpha=alpha, power=power, alternative="two-sided")
    return float(es) * sd * 100


def detectable_drops(
    requests: dict[str, int], scores: pl.DataFrame | None = None, *, family: int = 1
) -> list[Detectable]:
    """Per perspective (``requests``: the plan's requests per perspective): the detectable drop at the level the
    verdicts use over a ``family`` of pooled deltas, from the dense base's variance and clusters where ``scores``
    (an ``analyze`` scores table with ``se``) has a dense row for it."""
    alpha = ALPHA / max(family, 1)
    measured: dict[str, tuple[float, int, int]] = {}
    if scores is not None and {"method", "se", "n", "perspective"} <= set(scores.columns):
        dense = scores.filter(
            (pl.col("method") == "dense") & pl.col("se").is_not_null() & pl.col("se").is_not_nan() & (pl.col("n") > 1)
        )
        has_clusters = "clusters" in dense.columns
        for row in dense.iter_rows(named=True):
            n_run = int(row["n"])
            g_run = int(row["clusters"]) if has_clusters and row["clusters"] else n_run
            measured.setdefault(str(row["perspective"]), (float(row["se"]), n_run, g_run))
    out = []
    for perspective, n in sorted(requests.items()):
        if perspective in measured:
            se, n_run, g_run = measured[perspective]
            units = max(1, round(g_run * n / n_run))  # the plan's clusters, at the measured requests per cluster
            sd = se / 100 * math.sqrt(g_run)
            source = f"dense base measured (SE {se:.2f} on {n_run} requests, {g_run} clusters)"
        else:
            units, sd = n, ASSUMED_SD
            source = f"assumed per-request SD {ASSUMED_SD:g}, independent items"
        drop = detectable_drop(units, sd, alpha=alpha)
        floor = sign_flip_floor(units)
        if drop is None and units >= 2 and floor > alpha:
            source = f"too few clusters to decide: {units} give no p below {floor:.3g} > {alpha:.3g}"
        out.append(Detectable(perspective, n, drop, source))
    return out
