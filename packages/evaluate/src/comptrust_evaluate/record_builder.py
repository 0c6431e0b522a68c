"""Turn a finished request into a :class:`Record`: the task parses and scores it, the detectors judge refusal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from comptrust_core import Attribute, Endpoint, Record, ScoreField

from comptrust_evaluate.plan import Unit
from comptrust_evaluate.protocols import Generation, ProtocolClient
from comptrust_evaluate.refusal import Verdict, get_detector
from comptrust_evaluate.tasks import Outcome

__all__ = ["add_verdict", "build_record", "trusted_record"]

log = logging.getLogger(__name__)


_FIELDS = Record.model_fields
assert not Record.__pydantic_post_init__ and not Record.__pydantic_root_model__  # what trusted_record relies on


def trusted_record(**values: Any) -> Record:
    """What ``Record.model_construct(**values)`` builds (defaults for the fields not given, the given ones as the
    fields set), for ``values`` that name fields only; without model_construct's per-field alias handling, which is
    a large share of the per-request CPU. No validation: every value must already be valid."""
    given = set(values)
    for name, info in _FIELDS.items():
        if name not in values:
            values[name] = info.get_default(call_default_factory=True, validated_data=values)
    record = Record.__new__(Record)
    object.__setattr__(record, "__dict__", {name: values[name] for name in _FIELDS})
    object.__setattr__(record, "__pydantic_fields_set__", given)
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


def add_verdict(detector: str, verdict: Verdict, scores: list[ScoreField], attributes: list[Attribute]) -> None:
    """A verdict of a detector besides the task's own, as a ``refusal`` score of variant ``detector`` and a
    ``refusal_<detector>_rule`` attribute naming the rule that fired (if one did)."""
    scores.append(ScoreField(name="refusal", value=float(verdict.refused), variant=detector))
    if verdict.rule:
        attributes.append(Attribute(name=f"refusal_{detector}_rule", value=verdict.rule))


def _judge(unit: Unit, generation: Generation) -> tuple[Outcome | None, str | None]:
    try:
        if unit.request.params.prompt_logprobs:
            if not generation.prompt_logprobs:
                return None, "the server returned no prompt logprobs (TGI decoder_input_details, OpenAI echo)"
            return unit.task.evaluate_prompt(unit.item, generation.prompt_logprobs), None
        return unit.task.evaluate(unit.item, generation.text), None
    except Exception as exc:  # a parser bug must not stop a long run; the record says what failed
        log.exception("task %s could not score item %s", unit.task.name, unit.item.item_id)
        return None, f"scoring failed: {type(exc).__name__}: {exc}"


def build_record(
    *,
    endpoint: Endpoint,
    client: ProtocolClient,
    unit: Unit,
    key: str,
    generation: Generation | None,
    error: str | None,
    http_status: int | None,
    latency_s: float,
    attempts: int,
    finished_at: str,
    extra_scores: Sequence[ScoreField] = (),
    extra_attributes: Sequence[Attribute] = (),
) -> Record:
    """An ``ok`` record (with prediction, scores, refusal) or an ``error`` one.
    ``extra_scores``/``extra_attributes`` (a toxicity scorer's) are added to ``ok`` records.

    Only a request that got no answer (transport failure, HTTP error, a body that is not a generation) is an error.
    An empty or blank generation is an answer and is scored like any other, as DecodingTrust scores it: a blank
    toxicity continuation gets no toxicity score (-1 in the prompt's maximum) and is never a refusal
    (``toxicity/perspective_api_evaluate.py::get_score``); a blank privacy answer counts in the total, neither leak nor
    refusal (``privacy/result_agg.py``, ``total_count += 1`` for every line); a blank classification answer is wrong
    or unparseable (every ``do_classification`` parser)."""
    outcome: Outcome | None = None
    scores: list[ScoreField] = []
    attributes: list[Attribute] = list(unit.item.attributes)
    if generation is None:
        error = error or "no answer"
    else:
        outcome, error = _judge(unit, generation)
    verdict = outcome.refusal if outcome is not None and not unit.request.params.prompt_logprobs else None
    if outcome is not None:
        scores.extend(outcome.scores)
        scores.extend(extra_scores)
        attributes.extend(outcome.attributes)
        attributes.extend(extra_attributes)
        if verdict is not None and verdict.detector != "broad":
            assert generation is not None
            add_verdict("broad", get_detector("broad").detect(generation.text), scores, attributes)
    # every field is built here from already-validated parts, and the status/error/scores invariants hold by
    # construction above: skipping pydantic's re-validation is a large share of the per-request CPU cost
    return trusted_record(
        key=key,
        endpoint=endpoint.name,
        endpoint_url=endpoint.url,
        task=unit.task.name,
        perspective=unit.task.perspective,
        sub_scenario=unit.item.sub_scenario,
        item_id=unit.item.item_id,
        sample_index=unit.sample_index,
        request=unit.request,
        protocol=client.name,
        template=client.template(unit.request),
        status="ok" if outcome is not None else "error",
        error=None if outcome is not None else error,
        http_status=http_status,
        text=generation.text if generation else None,
        finish_reason=generation.finish_reason if generation else None,
        prompt_tokens=generation.prompt_tokens if generation else None,
        completion_tokens=generation.completion_tokens if generation else None,
        logprobs=generation.logprobs if generation and unit.request.params.logprobs else None,
        latency_s=round(latency_s, 6),
        attempts=attempts,
        finished_at=finished_at,
        refusal=verdict.refused if verdict else None,
        refusal_detector=verdict.detector if verdict else None,
        refusal_rule=verdict.rule if verdict else None,
        label=unit.item.label,
        prediction=outcome.prediction if outcome else None,
        scores=scores,
        attributes=attributes,
    )
