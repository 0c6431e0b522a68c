"""Score hand-built generations through the real pipeline: a suite and data files in DecodingTrust's layout, the
task's own items, a generation per request (written by the test), the record builder, and analysis's scores.

Each test module in this folder works its expected numbers out by hand from the reference's rules (the file and
function are named beside each number), under both scorer variants.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from comptrust_analysis import load_runs, perspective_scores
from comptrust_core import Endpoint
from comptrust_evaluate.offline import offline_run
from comptrust_evaluate.plan import Unit, build_plan, load_suite
from comptrust_evaluate.scorers import ToxicityScorer

__all__ = ["Scores", "TableScorer", "run_generations", "write_data"]

ENDPOINT = Endpoint(name="model", url="http://127.0.0.1:1")


class TableScorer(ToxicityScorer):
    """A toxicity scorer that looks each text up in a table (unknown texts: 0.0)."""

    name: ClassVar[str] = "table"

    def __init__(self, table: Mapping[str, float]) -> None:
        self.table = dict(table)
        self.seen: list[str] = []

    @property
    def version(self) -> str:
        return "test"

    async def score(self, texts: Sequence[str]) -> list[float | None]:
        self.seen.extend(texts)
        return [self.table.get(t, 0.0) for t in texts]


def write_data(root: Path, files: Mapping[str, Any]) -> Path:
    """Write ``files`` (relative path -> rows for .jsonl, an object for .json, an array for .npy, text otherwise)."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".jsonl"):
            path.write_text("".join(json.dumps(row) + "\n" for row in content))
        elif relative.endswith(".json"):
            path.write_text(json.dumps(content))
        elif relative.endswith(".npy"):
            np.save(path, np.asarray(content))
        else:
            path.write_text(str(content))
    return root


@dataclass(frozen=True)
class Scores:
    """What analysis makes of a run, per variant: ``score[perspective]`` and ``refusal[perspective]`` (0-100)."""

    run: Path

    def table(self, variant: str) -> dict[str, tuple[float | None, float | None]]:
        frame = perspective_scores(load_runs([self.run]), variant)  # type: ignore[arg-type]
        return {r["perspective"]: (r["score"], r["refusal_rate"]) for r in frame.iter_rows(named=True)}

    def score(self, perspective: str, variant: str) -> float | None:
        return self.table(variant)[perspective][0]

    def refusal(self, perspective: str, variant: str) -> float | None:
        return self.table(variant)[perspective][1]


def run_generations(
    tmp_path: Path,
    scenarios: str,
    files: Mapping[str, Any],
    answer: Callable[[Unit], str | None],
    *,
    scorer: ToxicityScorer | None = None,
    limit: int | None = None,
    data: Path | None = None,
) -> Scores:
    """Build the plan of ``scenarios`` (TOML ``[[scenario]]`` entries) over ``files`` (or the data folder ``data``),
    give every request the text ``answer(unit)`` returns (``None``: the request got no answer, an error record), and
    write the run."""
    data = data or write_data(tmp_path / "data", files)
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(f'description = "hand-built"\ndata = "data"\n{scenarios}')
    plan = build_plan(load_suite(str(suite_file), data_dir=data), limit=limit)
    return Scores(offline_run(plan, answer, tmp_path / "run", endpoint=ENDPOINT, scorer=scorer))
