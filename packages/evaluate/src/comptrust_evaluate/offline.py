"""A run directory from generations you already have: every request of a plan gets the text a function returns,
and goes through the same task parsing, refusal rules, toxicity scorer and record builder as a served run.

For checking the scoring against a reference (the project's scoring tests, ``benchmarks/decodingtrust_reference.py``)
and for rescoring generations made elsewhere. No server and no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from comptrust_core import Attribute, Endpoint, RunInfo, ScoreField, record_key, write_run_info

from comptrust_evaluate.plan import Plan, Unit
from comptrust_evaluate.protocols import Generation, get_protocol
from comptrust_evaluate.record_builder import build_record
from comptrust_evaluate.scorers import ToxicityScorer, toxicity_fields

__all__ = ["offline_run"]


def offline_run(
    plan: Plan,
    answer: Callable[[Unit], str | None],
    out: Path,
    *,
    endpoint: Endpoint | None = None,
    scorer: ToxicityScorer | None = None,
) -> Path:
    """Write the run directory ``out`` (records in ``records/<endpoint>.ndjson``) of ``plan``, each request answered
    with ``answer(unit)``; ``None`` stands for a request that got no answer (an error record)."""
    endpoint = endpoint or Endpoint(name="model", url="http://127.0.0.1:1")
    client = get_protocol("openai")(endpoint)
    (out / "records").mkdir(parents=True, exist_ok=True)
    info = RunInfo(
        run_id="offline",
        plan_hash=plan.plan_hash([endpoint.name]),
        plan=plan.description,
        tasks=plan.tasks,
        endpoints=[endpoint],
        created_at="1970-01-01T00:00:00Z",
        comptrust_version="offline",
    )
    write_run_info(out, info)
    with (out / "records" / f"{endpoint.name}.ndjson").open("w", encoding="utf-8") as fh:
        for unit in plan.iter_units():
            text = answer(unit)
            generation = None if text is None else Generation(text=text)
            extra: tuple[list[ScoreField], list[Attribute]] = ([], [])
            if scorer is not None and unit.task.needs_toxicity and text is not None:
                extra = asyncio.run(toxicity_fields(scorer, text))
            record = build_record(
                endpoint=endpoint,
                client=client,
                unit=unit,
                key=record_key(endpoint.name, unit.task.name, unit.item.item_id, unit.sample_index, unit.request),
                generation=generation,
                error=None if generation is not None else "no answer (offline)",
                http_status=200 if generation is not None else None,
                latency_s=0.0,
                attempts=1,
                finished_at="1970-01-01T00:00:00Z",
                extra_scores=extra[0],
                extra_attributes=extra[1],
            )
            fh.write(record.model_dump_json() + "\n")
    return out
