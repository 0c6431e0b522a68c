"""Requests and records: the unit of work ``evaluate`` sends, and the line it appends when the work is done."""

from __future__ import annotations

import hashlib
import json
import operator
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "DECODINGTRUST_PERSPECTIVES",
    "RECORD_SCHEMA_VERSION",
    "Attribute",
    "ChatMessage",
    "GenerationParams",
    "Record",
    "RequestSpec",
    "ScoreField",
    "record_key",
]

RECORD_SCHEMA_VERSION = 1

DECODINGTRUST_PERSPECTIVES: tuple[str, ...] = (
    "toxicity",
    "stereotype",
    "advglue",
    "ood",
    "adv_demonstration",
    "privacy",
    "machine_ethics",
    "fairness",
)
"""The ``perspective`` value of a record for each of DecodingTrust's eight perspectives, in the paper's order."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(BaseModel):
    """Decoding parameters, in TGI's vocabulary. ``temperature == 0`` or ``do_sample == False`` means greedy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    prompt_logprobs: bool = Field(
        default=False,
        exclude_if=operator.not_,
        description="ask for the prompt's own token logprobs (TGI decoder_input_details, OpenAI echo+logprobs); "
        "left out of the serialized form when false, so records and keys written before it stay the same",
    )

    @field_validator("prompt_logprobs", mode="before")
    @classmethod
    def _absent_is_false(cls, value: object) -> object:
        return False if value is None else value  # a columnar store (Parquet) fills the absent field with null

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class RequestSpec(BaseModel):
    """What to send: chat ``messages`` (rendered by the server's chat template) or a raw ``prompt`` string."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    params: GenerationParams = GenerationParams()

    @model_validator(mode="after")
    def _one_of(self) -> RequestSpec:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a request needs exactly one of 'messages' or 'prompt'")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self


class ScoreField(BaseModel):
    """One number a task's scorer attached to a record, e.g. ``correct`` under the ``dt-main`` variant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: float | None
    variant: str | None = None


class Attribute(BaseModel):
    """A string fact about the item (sensitive attribute, demographic group, ...), for the analysis stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: str


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, without an encoder built per key."""


def record_key(endpoint: str, task: str, item_id: str, sample_index: int, request: RequestSpec) -> str:
    """Stable identity of one request: the same inputs always give the same key, in any process."""
    payload = _KEY_ENCODER.encode(
        {
            "endpoint": endpoint,
            "task": task,
            "item": item_id,
            "sample": sample_index,
            "request": request.model_dump(mode="json"),
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


class Record(BaseModel):
    """One finished request, as one line of ``RUN_DIR/records/*.ndjson``.

    Requests that got no answer carry ``status == 'error'`` and an ``error``, never scores; an empty generation is
    an answer (``ok``), scored as the benchmark scores it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = RECORD_SCHEMA_VERSION
    key: str
    endpoint: str
    endpoint_url: str
    task: str
    perspective: str
    sub_scenario: str = ""
    item_id: str
    sample_index: int = 0
    request: RequestSpec
    protocol: str
    template: Literal["server", "client", "none"] = Field(
        description="who rendered chat messages to text: the server template, the client, or none (raw prompt)"
    )
    status: Literal["ok", "error"]
    error: str | None = None
    http_status: int | None = None
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[float] | None = None
    latency_s: float
    attempts: int = Field(ge=1)
    finished_at: str
    refusal: bool | None = None
    refusal_detector: str | None = None
    refusal_rule: str | None = None
    label: str | None = Field(default=None, description="the gold answer, where the task has one")
    prediction: str | None = Field(default=None, description="the answer parsed from text, where the task parses one")
    scores: list[ScoreField] = Field(default_factory=list)
    attributes: list[Attribute] = Field(default_factory=list)

    @model_validator(mode="after")
    def _error_has_no_scores(self) -> Record:
        if self.status == "error":
            if not self.error:
                raise ValueError("an error record needs an 'error' message")
            if self.scores:
                raise ValueError("an error record carries no scores")
        return self
