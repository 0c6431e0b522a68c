"""Coverage of the intervals and the gate's false failures by number of clusters (the docs' table, issue 28).

For G = 2, 3, 4, 6, 10, 30, 100 clusters (1-6 requests each), binary and continuous outcomes:

* delta coverage: the share of paired data sets (true delta -10 points) whose 95% interval holds the true delta,
  a missing interval (too few clusters) counted as holding it, and the share with no interval;
* score coverage: the same for a score of true value 80 (Clopper-Pearson at the effective size);
* gate false failures: the share of studies shaped like the quickstart (5 configurations x 8 perspectives, one
  family) that fail `--gate max-drop=5` when every true delta is exactly -5 (the least favourable null) or 0;
* power: the share of studies whose one real drop (the size the dry run promises at this many independent clusters,
  at the family's level 0.05/40) reads `drop` under the method the analysis uses at that size.

    uv run python benchmarks/gate_simulation.py [--sims 2000] [--studies 400]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from comptrust_analysis import simulate as sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=2000, help="data sets per coverage cell")
    parser.add_argument("--studies", type=int, default=400, help="studies per false-failure cell")
    args = parser.parse_args()
    print(
        f"{args.sims} data sets per coverage cell, {args.studies} studies of {sim.CONFIGS} x {sim.PERSPECTIVES} "
        "cells per false-failure cell; MC standard error of a 95% coverage ~"
        f"{100 * math.sqrt(0.05 * 0.95 / args.sims):.1f} points"
    )
    print(
        "| G | outcome | delta coverage | no interval | score coverage | gate false failures (δ=-5) "
        "| gate false failures (δ=0) | promised drop | power |"
    )
    print("|" + "---|" * 9)
    start = time.perf_counter()
    for g in sim.G_ALL:
        for binary in (True, False):
            rng = np.random.default_rng(1000 * g + binary)
            delta_cov, none = sim.delta_coverage(rng, g, binary, args.sims)
            score_cov = sim.score_coverage(rng, g, binary, args.sims)
            at_margin = sim.gate_false_failures(rng, g, binary, args.studies, -0.05)
            at_zero = sim.gate_false_failures(rng, g, binary, args.studies, 0.0)
            promised, power = sim.promised_power(rng, g, args.studies)
            print(
                f"| {g} | {'binary' if binary else 'continuous'} | {100 * delta_cov:.1f}% | {100 * none:.0f}% | "
                f"{100 * score_cov:.1f}% | {100 * at_margin:.1f}% | {100 * at_zero:.1f}% | "
                f"{f'{promised:.1f}' if promised is not None else 'none'} | "
                f"{f'{100 * power:.1f}%' if power is not None else 'n/a'} |",
                flush=True,
            )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
