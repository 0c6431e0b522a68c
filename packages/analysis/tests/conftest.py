from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from comptrust_core import (
    BackendInfo,
    BaseModelRef,
    Endpoint,
    Manifest,
    MeasuredFacts,
    MethodSpec,
    Record,
    RequestSpec,
    RunInfo,
    ScoreField,
    record_key,
    write_run_info,
)

PERSPECTIVES = ["advglue", "machine_ethics", "toxicity"]


def make_manifest(name: str, method: str, sparsity: float) -> Manifest:
    return Manifest(
        name=name,
        base_model=BaseModelRef(source="tiny", kind="local", content_hash="sha256:00"),
        method=MethodSpec(name=method, sparsity=sparsity if method != "dense" else None),
        backend=BackendInfo(name="comptrust", version="0.1.0", device="cpu"),
        measured=MeasuredFacts(sparsity=sparsity, effective_bits=16.0, wall_time_s=1.0),
        created_at="2026-01-01T00:00:00Z",
        comptrust_version="0.1.0",
    )


def make_record(endpoint: str, perspective: str, i: int, *, ok: bool, score: float | None, refusal: bool) -> Record:
    req = RequestSpec(prompt=f"{perspective} item {i}")
    scores = [] if (score is None or not ok) else [ScoreField(name="score", value=score, variant=None)]
    return Record(
        key=record_key(endpoint, perspective, str(i), 0, req),
        endpoint=endpoint,
        endpoint_url="http://127.0.0.1:1",
        task=perspective,
        perspective=perspective,
        item_id=str(i),
        request=req,
        protocol="tgi",
        template="none",
        status="ok" if ok else "error",
        error=None if ok else "HTTP 500",
        text="answer" if ok else None,
        latency_s=0.1,
        attempts=1,
        finished_at=f"2026-01-01T00:00:{i:02d}Z",
        refusal=refusal if ok else None,
        scores=scores,
    )


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
                manifest=make_manifest(e, "dense" if e == "dense" else "magnitude", 0.0 if e == "dense" else 0.5),
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
                    rec = make_record(e, p, i, ok=ok, score=score, refusal=rng.random() > 0.7)
                    records.append(rec)
                    lines.append(rec.model_dump_json())
            (run_dir / "records" / f"{e}.ndjson").write_text("\n".join(lines) + "\n")
        return run_dir, records

    return factory
