"""The Polars schema of a record line (mirrors ``comptrust_core.Record``; a test keeps the two in step)."""

from __future__ import annotations

import polars as pl

__all__ = ["RECORD_SCHEMA"]

_PARAMS = pl.Struct(
    {
        "max_new_tokens": pl.Int64,
        "temperature": pl.Float64,
        "top_p": pl.Float64,
        "top_k": pl.Int64,
        "seed": pl.Int64,
        "stop": pl.List(pl.String),
        "logprobs": pl.Boolean,
        "prompt_logprobs": pl.Boolean,
    }
)

_REQUEST = pl.Struct(
    {
        "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
        "prompt": pl.String,
        "params": _PARAMS,
    }
)

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "schema_version": pl.Int64(),
    "key": pl.String(),
    "endpoint": pl.String(),
    "endpoint_url": pl.String(),
    "task": pl.String(),
    "perspective": pl.String(),
    "sub_scenario": pl.String(),
    "item_id": pl.String(),
    "sample_index": pl.Int64(),
    "request": _REQUEST,
    "protocol": pl.String(),
    "template": pl.String(),
    "status": pl.String(),
    "error": pl.String(),
    "http_status": pl.Int64(),
    "text": pl.String(),
    "finish_reason": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "logprobs": pl.List(pl.Float64),
    "latency_s": pl.Float64(),
    "attempts": pl.Int64(),
    "finished_at": pl.String(),
    "refusal": pl.Boolean(),
    "refusal_detector": pl.String(),
    "refusal_rule": pl.String(),
    "label": pl.String(),
    "prediction": pl.String(),
    "scores": pl.List(pl.Struct({"name": pl.String, "value": pl.Float64, "variant": pl.String})),
    "attributes": pl.List(pl.Struct({"name": pl.String, "value": pl.String})),
}
