"""Synthetic studies for checking the intervals and the gate: coverage, false failures and power by cluster count.

Each simulated cell is a paired comparison of ``G`` clusters of 1-6 requests, binary (0/1 answers whose rate varies
by cluster) or continuous (a cluster effect plus noise, in [0, 1]); its estimate is the mean over requests, as a
perspective's score of one group is. ``benchmarks/gate_simulation.py`` prints the table the docs quote; the tests run
the same functions with fewer data sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from comptrust_analysis.decide import SIGN_FLIP_BELOW, Test, adjust, bounded_score_interval, sign_flip_test, t_test
from comptrust_analysis.power import detectable_drop

__all__ = [
    "CONFIGS",
    "G_ALL",
    "PERSPECTIVES",
    "SimCell",
    "covers",
    "delta_coverage",
    "delta_test",
    "gate_fails",
    "gate_false_failures",
    "paired_cell",
    "promised_power",
    "score_cell",
    "score_coverage",
    "score_covers",
]

CONFIGS = 5
PERSPECTIVES = 8
"""A study shaped like the quickstart: 5 compressed configurations x 8 perspectives, one family."""
ALPHA = 0.05


@dataclass(frozen=True)
class SimCell:
    totals: np.ndarray
    weights: np.ndarray
    n: int


def _sizes(rng: np.random.Generator, g: int) -> np.ndarray:
    return rng.integers(1, 7, g)


def paired_cell(rng: np.random.Generator, g: int, binary: bool, delta: float) -> SimCell:
    """One paired delta cell (0-1 scale) with true mean difference ``delta``."""
    sizes = _sizes(rng, g)
    clusters = np.repeat(np.arange(g), sizes)
    if binary:
        # the dense rate varies by cluster, inside [0.3, 0.7] so that a shift up to 0.3 stays a probability
        p = rng.uniform(0.3, 0.7, g)[clusters]
        dense = (rng.random(clusters.size) < p).astype(float)
        comp = (rng.random(clusters.size) < p + delta).astype(float)
        d = comp - dense
    else:
        shared = rng.normal(0, 0.1, g)[clusters]
        d = delta + shared + rng.normal(0, 0.1, clusters.size)
    n = d.size
    return SimCell(np.bincount(clusters, d / n, g), sizes / n, n)


def score_cell(rng: np.random.Generator, g: int, binary: bool, truth: float) -> tuple[float, float | None, int]:
    """One score (0-1) with true mean ``truth``: (estimate, clustered SE, requests)."""
    sizes = _sizes(rng, g)
    clusters = np.repeat(np.arange(g), sizes)
    if binary:
        spread = min(truth, 1 - truth) * 0.8
        p = truth + rng.uniform(-spread, spread, g)[clusters]
        x = (rng.random(clusters.size) < p).astype(float)
    else:
        a = 4.0
        x = (
            rng.beta(a * truth, a * (1 - truth), g)[clusters] * 0.7
            + rng.beta(a * truth, a * (1 - truth), clusters.size) * 0.3
        )
    n = x.size
    est = float(x.mean())
    resid = np.bincount(clusters, x - est, g) / n
    se = float(np.sqrt(g / (g - 1) * (n - 1) / (n - 1) * (resid**2).sum())) if g > 1 else None
    return est, se, n


def delta_test(cell: SimCell) -> Test:
    """The test the analysis uses for a paired delta of means with this many clusters."""
    g = cell.totals.size
    if g < SIGN_FLIP_BELOW:
        return sign_flip_test(cell.totals, cell.weights)
    theta = float(cell.totals.sum())
    resid = cell.totals - theta * cell.weights
    se = float(np.sqrt(g / (g - 1) * (resid**2).sum()))
    return t_test(100 * theta, 100 * se, g, method="t")


def gate_fails(tests: list[Test], max_drop: float) -> list[bool]:
    """Which cells of one family the gate fails: a ``drop`` verdict (Holm-adjusted p < 0.05) whose Bonferroni
    interval (simultaneous over the family) lies wholly below -``max_drop``."""
    ps = [t.p() for t in tests]
    family = [i for i, p in enumerate(ps) if p is not None]
    adjusted: dict[int, float] = {}
    if family:
        corrected = adjust([float(ps[i]) for i in family], "holm")  # type: ignore[arg-type]
        adjusted = dict(zip(family, (float(x) for x in corrected), strict=True))
    level = ALPHA / max(len(family), 1)
    out = []
    for i, t in enumerate(tests):
        p_adj = adjusted.get(i)
        drop = p_adj is not None and p_adj < ALPHA and t.estimate < 0
        found = t.interval(level)[0] if drop else None
        out.append(bool(drop and found is not None and found[1] < -max_drop))
    return out


def covers(t: Test, truth: float) -> bool | None:
    """Whether the 95% interval holds ``truth`` (score points); None when there is no interval."""
    found, _ = t.interval(ALPHA)
    if found is None:
        return None
    return found[0] <= truth <= found[1]


def score_covers(estimate: float, se: float | None, n: int, g: int, truth: float) -> bool | None:
    low, high, _ = bounded_score_interval(estimate, se, n, g)
    if low is None or high is None:
        return None
    return low <= truth <= high


G_ALL = (2, 3, 4, 6, 10, 30, 100)
"""The cluster counts the docs' table covers."""


def delta_coverage(rng: np.random.Generator, g: int, binary: bool, sims: int) -> tuple[float, float]:
    """(share of 95% delta intervals holding the true delta -10 points, a missing one counted as holding it; share
    with no interval)."""
    hits = [covers(delta_test(paired_cell(rng, g, binary, -0.1)), -10.0) for _ in range(sims)]
    return sum(h is not False for h in hits) / sims, sum(h is None for h in hits) / sims


def score_coverage(rng: np.random.Generator, g: int, binary: bool, sims: int) -> float:
    """Share of 95% score intervals holding the true score 80 (a missing one counted as holding it)."""
    hits = [score_covers(*score_cell(rng, g, binary, 0.8), g, 0.8) for _ in range(sims)]
    return sum(h is not False for h in hits) / sims


def gate_false_failures(rng: np.random.Generator, g: int, binary: bool, studies: int, truth: float) -> float:
    """Share of quickstart-shaped studies (every true delta ``truth``, 0-1 scale) that fail ``--gate max-drop=5``."""
    failed = 0
    for _ in range(studies):
        tests = [delta_test(paired_cell(rng, g, binary, truth)) for _ in range(CONFIGS * PERSPECTIVES)]
        failed += any(gate_fails(tests, 5.0))
    return failed / studies


def promised_power(rng: np.random.Generator, g: int, studies: int) -> tuple[float | None, float | None]:
    """(the drop the dry run promises at ``g`` independent clusters at the family's level, the share of studies in
    which a true drop of that size reads ``drop`` under the method the analysis uses at that size)."""
    family = CONFIGS * PERSPECTIVES
    promised = detectable_drop(g, 0.5, alpha=ALPHA / family)
    if promised is None:
        return None, None
    found = 0
    for _ in range(studies):
        d = -promised / 100 + rng.normal(0, 0.5, g)  # the dry run's assumption: independent items
        p = delta_test(SimCell(d / g, np.full(g, 1 / g), g)).p()
        found += p is not None and p < ALPHA / family
    return promised, found / studies
