from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from comptrust_core import Endpoint, Record, RunInfo, write_run_info

from .study import manifest, record

PERSPECTIVES = ["advglue", "machine_ethics", "toxicity"]


RunFactory = Callable[..., tuple[Path, list[Record]]]


@pytest.fixture
def make_run(tmp_path: Path) -> RunFactory:
    def factory(name: str = "run", endpoints: tuple[str, ...] = ("dense",), seed: int = 0) -> tuple[Path, list[Record]]:
        rng = random.Random(seed)
        run_dir = tmp_path / name
        (run_dir / "records").mkdir(parents=True)
        eps = [
            Endpoint(
                name=e,
                url="http://127.0.0.1:1",
                manifest=manifest("dense", name=e) if e == "dense" else manifest("magnitude", sparsity=0.5, name=e),
            )
            for e in endpoints
        ]
        write_run_info(
            run_dir,
            RunInfo(
                run_id=name,
                plan_hash="h",
                plan="suite quick",
                tasks=PERSPECTIVES,
                endpoints=eps,
                created_at="2026-01-01T00:00:00Z",
                comptrust_version="0.1.0",
            ),
        )
        records: list[Record] = []
        for e in endpoints:
            lines = []
            for p in PERSPECTIVES:
                for i in range(12):
                    ok = rng.random() > 0.1
                    score = None if p == "toxicity" else float(rng.random() > 0.4)
                    rec = record(e, p, i, score, ok=ok, refusal=rng.random() > 0.7)
                    records.append(rec)
                    lines.append(rec.model_dump_json())
            (run_dir / "records" / f"{e}.ndjson").write_text("\n".join(lines) + "\n")
        return run_dir, records

    return factory
