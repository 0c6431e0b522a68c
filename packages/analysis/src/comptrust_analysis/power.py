"""Power before the spend: the smallest change against the dense base a plan can detect, per perspective.

For a paired comparison on ``n`` requests with per-request differences of standard deviation ``sd``, the smallest
true delta a two-sided test at ``alpha`` finds with probability ``power`` is ``es · sd``, ``es`` the standardized
effect size statsmodels' :class:`~statsmodels.stats.power.TTestPower` solves for at that ``n``.

Where ``sd`` comes from: the dense base's own run when the study has one (its score's clustered standard error times
the square root of its records: the spread per request, clustering and DecodingTrust's weights included; the
compressed side is assumed to correlate 0.5 with it, which makes the paired difference's spread equal to one
side's), else :data:`ASSUMED_SD` (0/1 scores that disagree with the dense base on a quarter of the items, each item
independent: optimistic where items cluster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl
from statsmodels.stats.power import TTestPower

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
    """The smallest true change (score points) a paired two-sided test finds with ``power`` on ``requests``."""
    if requests < 2 or not sd > 0:
        return None
    es = TTestPower().solve_power(effect_size=None, nobs=requests, alpha=alpha, power=power, alternative="two-sided")
    return float(es) * sd * 100


def detectable_drops(requests: dict[str, int], scores: pl.DataFrame | None = None) -> list[Detectable]:
    """Per perspective (``requests``: the plan's requests per perspective): the detectable drop, from the dense
    base's variance where ``scores`` (an ``analyze`` scores table with ``se``) has a dense row for it."""
    measured: dict[str, tuple[float, int]] = {}
    if scores is not None and {"method", "se", "n", "perspective"} <= set(scores.columns):
        dense = scores.filter((pl.col("method") == "dense") & pl.col("se").is_not_null() & (pl.col("n") > 1))
        for row in dense.iter_rows(named=True):
            measured.setdefault(str(row["perspective"]), (float(row["se"]), int(row["n"])))
    out = []
    for perspective, n in sorted(requests.items()):
        if perspective in measured:
            se, n_run = measured[perspective]
            sd = se / 100 * math.sqrt(n_run)
            source = f"dense base measured (SE {se:.2f} on {n_run} requests)"
        else:
            sd, source = ASSUMED_SD, f"assumed per-request SD {ASSUMED_SD:g}, independent items"
        out.append(Detectable(perspective, n, detectable_drop(n, sd), source))
    return out
