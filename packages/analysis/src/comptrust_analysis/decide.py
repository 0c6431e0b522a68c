"""The methods behind every interval and verdict, chosen by the number of clusters, each inside its scale.

Why: a cluster-robust t interval with 2-6 clusters is anti-conservative or degenerate (a zero variance gives an
interval of width zero and a p-value of 0), and a t interval ignores that a score lives in [0, 100]. What is used
instead (``benchmarks/gate_simulation.py`` measures their coverage and the gate's false failures at 2-100 clusters):

* **Paired deltas of means** (every structured perspective, toxicity below :data:`BOOTSTRAP_FROM` clusters): below
  :data:`SIGN_FLIP_BELOW` clusters, a cluster **sign-flip randomization test** on the cluster totals of the weighted
  paired differences (swapping the compressed and dense answers of a whole cluster flips its total's sign; exact over
  all ``2^G`` sign vectors up to :data:`EXACT_UP_TO` clusters, else :data:`FLIP_DRAWS` seeded draws). Its interval
  is the set of deltas the test does not reject (test inversion over the shift ``δ``: the totals less ``δ`` times
  their weights), searched inside [-100, 100], so it is inside the scale by construction. Its smallest two-sided
  p-value is ``2 / 2^G``: 4 clusters cannot give p < 0.125, and a level the test cannot reach gives no interval
  (``too few clusters``). From :data:`SIGN_FLIP_BELOW` clusters on, the clustered (CR1) standard error with a t
  interval (``G - 1`` degrees of freedom), the parameter space [-100, 100] intersected.
* **Scores that are means** in [0, 100]: the Clopper-Pearson interval at the effective sample size
  ``p(1-p)/se²`` with Korn and Graubard's degrees-of-freedom adjustment ``(t_{n-1}/t_{G-1})²`` (their method for
  proportions from clustered samples): inside [0, 100] by construction, wide where clusters are few; a cell with no
  spread (every answer right, say) uses ``G`` clusters as its sample size rather than a width of zero.
* **Statistics that are not means** (fairness's gaps; toxicity from :data:`BOOTSTRAP_FROM` clusters): the cluster
  bootstrap (percentile intervals lie inside the statistic's range); below :data:`BOOTSTRAP_FROM` clusters, or when
  every resample gives the same value, no interval and no verdict, saying why.

A variance of zero (every cluster's paired difference the same) never yields an interval or a verdict:
``no spread between clusters``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "BOOTSTRAP_FROM",
    "EXACT_UP_TO",
    "FLIP_DRAWS",
    "SIGN_FLIP_BELOW",
    "Test",
    "adjust",
    "bootstrap_test",
    "bounded_score_interval",
    "no_test",
    "normal_test",
    "sign_flip_floor",
    "sign_flip_test",
    "t_test",
]

SIGN_FLIP_BELOW = 100
"""Clusters from which a paired delta uses the clustered standard error and t; below it, the sign-flip test. Chosen
by simulation (``benchmarks/gate_simulation.py``): at 30 clusters of unequal sizes the t interval at the family's
level let 6% of null studies fail the gate; the sign-flip test stays under 5% at every size, and from 100 clusters
the two agree."""
EXACT_UP_TO = 15
"""Up to this many clusters the sign-flip test enumerates every sign vector (2^15 = 32,768)."""
FLIP_DRAWS = 1 << 15
"""Seeded random sign vectors (the observed one included) beyond :data:`EXACT_UP_TO` clusters."""
FLIP_SEED = 20240607
BOOTSTRAP_FROM = 50
"""Clusters from which a statistic that is not a mean gets a cluster-bootstrap interval and a verdict."""
_BISECT = 40


def adjust(ps: list[float], method: str) -> np.ndarray:
    """Multiplicity-adjusted p-values: ``holm`` (Holm's step-down), ``bh`` (Benjamini-Hochberg) or ``none``; the same
    numbers as statsmodels' ``multipletests`` (a test checks), without its garbage collection on every call."""
    p = np.asarray(ps, float)
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if method == "bh":
        return np.asarray(stats.false_discovery_control(p, method="bh"))
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}")
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def sign_flip_floor(clusters: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test of ``clusters`` clusters can give: 2 / 2^G."""
    return 2.0 ** (1 - clusters)


@dataclass(frozen=True)
class Test:
    """A paired delta's test and intervals, on the 0-100 scale, at any level: ``p(delta0)`` (two-sided) and
    ``interval(alpha)`` (the deltas not rejected at ``alpha``: (low, high), or None with ``note`` saying why)."""

    estimate: float
    method: str
    p_at: Callable[[float], float | None]
    interval_at: Callable[[float], tuple[float, float] | None]
    one_sided_at: Callable[[float, bool], float | None]
    """p of H0 delta <= delta0 (``greater=True``) or delta >= delta0 (False)."""
    floor: float = 0.0
    """The smallest two-sided p-value the method can give."""
    note: str | None = None
    """Why there is no interval or verdict (then every call gives None)."""

    def p(self) -> float | None:
        return self.p_at(0.0)

    def interval(self, alpha: float) -> tuple[tuple[float, float] | None, str | None]:
        """The (1 - ``alpha``) interval, or None and why."""
        if self.note is not None:
            return None, self.note
        if self.floor > alpha:
            return None, f"too few clusters (the smallest p this test can give is {self.floor:.3g})"
        found = self.interval_at(alpha)
        if found is None:
            return None, "no interval at this level"
        return found, None


def no_test(estimate: float, method: str, note: str) -> Test:
    """A delta with no interval and no verdict, saying why."""
    return Test(estimate, method, lambda _d: None, lambda _a: None, lambda _d, _g: None, note=note)


@functools.lru_cache(maxsize=8)
def _signs(g: int) -> np.ndarray:
    """Every sign vector of ``g`` clusters (up to :data:`EXACT_UP_TO`), else :data:`FLIP_DRAWS` seeded ones with
    the observed (all +1) first."""
    if g <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=g)))
    else:  # float64: the products run in BLAS (int8 signs were 30x slower)
        signs = np.random.default_rng(FLIP_SEED + g).choice((1.0, -1.0), size=(FLIP_DRAWS, g))
        signs[0] = 1.0
    signs.setflags(write=False)
    return signs


def sign_flip_test(totals: np.ndarray, weights: np.ndarray, *, scale: float = 100.0) -> Test:
    """The cluster sign-flip test of a weighted mean ``θ = Σ_c totals_c`` whose clusters weigh ``weights``
    (``Σ weights = 1``): under ``delta = δ``, each ``totals_c - δ·weights_c`` is symmetric about 0. Values on the 0-1
    scale, results on ``scale``."""
    t = np.asarray(totals, float)
    w = np.asarray(weights, float)
    g = t.size
    theta = float(t.sum())
    resid = t - theta * w
    if g < 2 or not np.any(np.abs(resid) > 1e-12 * max(1.0, float(np.abs(t).max(initial=0.0)))):
        why = "one cluster" if g < 2 else "no spread between clusters"
        return no_test(theta * scale, "paired, cluster sign-flip", why)
    signs = _signs(g)
    exact = g <= EXACT_UP_TO
    a, b = signs @ t, signs @ w
    n = float(signs.shape[0])
    tol = 1e-9 * max(1.0, abs(theta))

    def p01(d0: float) -> float:
        return float(np.count_nonzero(np.abs(a - d0 * b) >= abs(theta - d0) - tol)) / n

    def one(d0: float, greater: bool) -> float:
        # H0 delta <= d0 against delta > d0: large observed statistics are evidence
        obs = theta - d0
        stat = a - d0 * b
        hits = stat >= obs - tol if greater else stat <= obs + tol
        return float(np.count_nonzero(hits)) / n

    def interval(alpha: float) -> tuple[float, float] | None:
        def bound(outer: float) -> float:
            if p01(outer) > alpha:  # not rejected at the edge of the scale
                return outer
            inside, out = theta, outer
            for _ in range(_BISECT):
                mid = (inside + out) / 2
                if p01(mid) > alpha:
                    inside = mid
                else:
                    out = mid
            return inside

        low, high = bound(-1.0), bound(1.0)
        if high - low <= 0:
            return None
        return low * scale, high * scale

    floor = sign_flip_floor(g) if exact else 1.0 / n
    kind = f"exact over {int(n)} sign vectors" if exact else f"{int(n)} seeded sign vectors"
    return Test(
        estimate=theta * scale,
        method=f"paired, cluster sign-flip ({g} clusters, {kind})",
        p_at=lambda d0: p01(d0 / scale),
        interval_at=interval,
        one_sided_at=lambda d0, greater: one(d0 / scale, greater),
        floor=floor,
    )


def t_test(estimate: float, se: float, clusters: int, *, bound: float = 100.0, method: str) -> Test:
    """Clustered standard error with a t reference (``clusters - 1`` degrees of freedom), on the score scale; the
    interval intersected with the parameter space [-``bound``, ``bound``]."""
    if clusters < 2:
        return no_test(estimate, method, "one cluster")
    return _reference_test(estimate, se, stats.t(clusters - 1), bound=bound, method=method)


def bootstrap_test(estimate: float, se: float, clusters: int, *, bound: float = 100.0, method: str) -> Test:
    """A bootstrap delta: its standard error with a normal reference (the interval at any level, so that adjusted
    intervals exist where a percentile would need more resamples), inside [-``bound``, ``bound``]."""
    if clusters < BOOTSTRAP_FROM:
        return no_test(estimate, method, f"too few clusters for the bootstrap ({clusters} < {BOOTSTRAP_FROM})")
    if not se > 0:
        return no_test(estimate, method, "bootstrap degenerate (every resample the same)")
    return normal_test(estimate, se, bound=bound, method=method)


def normal_test(estimate: float, se: float, *, bound: float = 100.0, method: str) -> Test:
    """``estimate`` with standard error ``se`` and a normal reference, inside [-``bound``, ``bound``]."""
    return _reference_test(estimate, se, stats.norm(), bound=bound, method=method)


def _reference_test(estimate: float, se: float, reference: Any, *, bound: float, method: str) -> Test:
    """``(estimate - δ) / se`` against ``reference`` (a frozen scipy distribution, symmetric about 0): p-values,
    intervals inside [-``bound``, ``bound``] and one-sided p-values."""
    if not se > 0:
        return no_test(estimate, method, "no spread between clusters")

    def p_at(d0: float) -> float:
        return float(2 * reference.sf(abs((estimate - d0) / se)))

    def interval(alpha: float) -> tuple[float, float]:
        q = float(reference.ppf(1 - alpha / 2))
        return max(-bound, estimate - q * se), min(bound, estimate + q * se)

    def one(d0: float, greater: bool) -> float:
        z = (estimate - d0) / se
        return float(reference.sf(z) if greater else reference.cdf(z))

    return Test(estimate, method, p_at, interval, one)


def bounded_score_interval(
    estimate: float, se: float | None, n: int, clusters: int, *, alpha: float = 0.05
) -> tuple[float | None, float | None, str | None]:
    """A score's (low, high) on the 0-1 scale, inside [0, 1] by construction, and a note where there is none:
    Clopper-Pearson at the effective sample size with Korn and Graubard's degrees-of-freedom adjustment."""
    if clusters < 2 or n < 2:
        return None, None, "one cluster"
    p = min(1.0, max(0.0, estimate))
    if se is not None and se > 0 and 0 < p < 1:
        n_eff = p * (1 - p) / se**2
        adjust = (stats.t.ppf(1 - alpha / 2, n - 1) / stats.t.ppf(1 - alpha / 2, clusters - 1)) ** 2
        n_eff = min(float(n), n_eff * float(adjust))
    else:  # no spread: every cluster counts as one observation
        n_eff = float(clusters)
    x = p * n_eff
    low = 0.0 if x <= 0 else float(stats.beta.ppf(alpha / 2, x, n_eff - x + 1))
    high = 1.0 if x >= n_eff else float(stats.beta.ppf(1 - alpha / 2, x + 1, n_eff - x))
    return low, high, None
