"""Power before the spend: the detectable drop, checked against the normal formula and by simulation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from comptrust_analysis.intervals import linear_estimates
from comptrust_analysis.power import ASSUMED_SD, detectable_drop, detectable_drops
from scipy import stats


def test_the_detectable_drop_follows_the_normal_formula_and_shrinks_with_the_square_root_of_n() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert detectable_drop(400, 0.5) == pytest.approx(z / 20 * 50, rel=0.01)
    assert detectable_drop(1600, 0.5) == pytest.approx(detectable_drop(400, 0.5) / 2, rel=0.01)  # type: ignore[operator]
    assert detectable_drop(1, 0.5) is None


def test_a_true_delta_of_the_detectable_size_is_found_80_percent_of_the_time() -> None:
    n, sd, sims = 200, 0.5, 1000
    delta = detectable_drop(n, sd)
    assert delta is not None
    rng = np.random.default_rng(8)
    d = delta / 100 + rng.normal(0, sd, (sims, n))
    frame = pl.DataFrame(
        {
            "run": np.repeat(np.arange(sims).astype(str), n),
            "endpoint": "e",
            "perspective": "p",
            "component": "all",
            "set": "s",
            "group": "g",
            "cluster": np.tile(np.arange(n).astype(str), sims),
            "value": d.ravel(),
        }
    )
    est = linear_estimates(frame.lazy(), ["run", "endpoint", "perspective"], "value")
    t = est["estimate"].to_numpy() / est["se"].to_numpy()
    rejected = np.abs(t) > stats.t.ppf(0.975, n - 1)
    assert 0.76 <= rejected.mean() <= 0.84


def test_a_measured_dense_base_replaces_the_assumption() -> None:
    scores = pl.DataFrame(
        {"method": ["dense", "gptq"], "perspective": ["ood", "ood"], "se": [2.0, 9.0], "n": [400, 400]}
    )
    rows = {d.perspective: d for d in detectable_drops({"ood": 400, "privacy": 400}, scores)}
    assert rows["ood"].drop == pytest.approx(detectable_drop(400, 0.02 * 20))
    assert "measured" in rows["ood"].source
    assert (
        rows["privacy"].drop == pytest.approx(detectable_drop(400, ASSUMED_SD)) and "assumed" in rows["privacy"].source
    )
