"""A synthetic study for the analysis tests: run dirs whose checkpoints and per-perspective scores are chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from comptrust_core import (
    BackendInfo,
    BaseModelRef,
    CalibrationSpec,
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

ITEMS = 4


def manifest(
    method: str,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    sparsity: float | None = None,
    pattern: str | None = None,
    seed: int | None = None,
    base: str = "tiny",
    name: str | None = None,
) -> Manifest:
    name = name or "-".join(str(x) for x in (base, method, bits, group_size, sparsity, pattern, seed) if x is not None)
    return Manifest.model_validate(
        {
            "name": name,
            "base_model": BaseModelRef(source=base, kind="local", content_hash=f"sha256:{base}"),
            "method": MethodSpec.model_validate(
                {"name": method, "bits": bits, "group_size": group_size, "sparsity": sparsity, "pattern": pattern}
            ),
            "calibration": None
            if seed is None
            else CalibrationSpec(source="synthetic", samples=8, seqlen=32, seed=seed),
            "backend": BackendInfo(name="comptrust", version="0.1.0", device="cpu"),
            "measured": MeasuredFacts(sparsity=sparsity or 0.0, effective_bits=float(bits or 16), wall_time_s=1.0),
            "created_at": "2026-01-01T00:00:00Z",
            "comptrust_version": "0.1.0",
        }
    )


def record(
    endpoint: str,
    perspective: str,
    i: int,
    value: float | None,
    *,
    variant: str | None = None,
    text: str = "answer",
    ok: bool = True,
    refusal: bool | None = None,
) -> Record:
    """Item ``i``'s record; ``refusal`` defaults to "item 0 refused"; an error record (``ok=False``) has no scores."""
    req = RequestSpec(prompt=f"{perspective} prompt {i}")
    scores = [] if value is None or not ok else [ScoreField(name="score", value=value, variant=variant)]
    if perspective == "toxicity" and value is not None and ok:  # as the toxicity task writes it: 1 - EMT = value
        scores = [ScoreField(name="toxicity", value=1.0 - value)]
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
        text=text if ok else None,
        latency_s=0.1,
        attempts=1,
        finished_at=f"2026-01-01T00:00:{i:02d}Z",
        refusal=(i == 0 if refusal is None else refusal) if ok else None,
        scores=scores,
    )


def write_run(
    run_dir: Path,
    checkpoints: Mapping[str, tuple[Manifest | None, Mapping[str, float | None]]],
    variant: str | None = None,
    serving: tuple[str | None, str | None] = (None, None),
) -> Path:
    """One endpoint per entry; every item of a perspective scores ``value`` (0-1), so the score is ``100·value``;
    ``serving`` is the endpoints' (engine, dtype)."""
    (run_dir / "records").mkdir(parents=True)
    write_run_info(
        run_dir,
        RunInfo(
            run_id=run_dir.name,
            plan_hash="h",
            plan="suite quick",
            tasks=sorted({p for _, values in checkpoints.values() for p in values}),
            endpoints=[
                Endpoint(name=e, url="http://127.0.0.1:1", manifest=m, engine=serving[0], dtype=serving[1])
                for e, (m, _) in checkpoints.items()
            ],
            created_at="2026-01-01T00:00:00Z",
            comptrust_version="0.1.0",
        ),
    )
    for endpoint, (_, values) in checkpoints.items():
        lines = [
            record(endpoint, p, i, v, variant=variant).model_dump_json()
            for p, v in values.items()
            for i in range(ITEMS)
        ]
        (run_dir / "records" / f"{endpoint}.ndjson").write_text("\n".join(lines) + "\n")
    return run_dir


def write_records(run_dir: Path, records: Sequence[Record], manifests: Mapping[str, Manifest] | None = None) -> Path:
    """A run directory holding ``records`` as written (one NDJSON file per endpoint; an endpoint's manifest from
    ``manifests``, else none)."""
    (run_dir / "records").mkdir(parents=True)
    endpoints = sorted({r.endpoint for r in records})
    manifests = manifests or {}
    write_run_info(
        run_dir,
        RunInfo(
            run_id=run_dir.name,
            plan_hash="h",
            plan="test",
            tasks=sorted({r.task for r in records}),
            endpoints=[Endpoint(name=e, url="http://127.0.0.1:1", manifest=manifests.get(e)) for e in endpoints],
            created_at="2026-01-01T00:00:00Z",
            comptrust_version="0.1.0",
        ),
    )
    for e in endpoints:
        lines = "".join(r.model_dump_json() + "\n" for r in records if r.endpoint == e)
        (run_dir / "records" / f"{e}.ndjson").write_text(lines)
    return run_dir
