"""TGI's native API (``POST /generate``, ``POST /generate_stream``, ``POST /tokenize``, ``GET /info``), as
reference/tgi-openapi-3.3.json describes it.

Semantics follow TGI 3.3: sampling happens when ``do_sample`` is true or any warper is set (a temperature other than
1, ``top_k``, ``top_p`` < 1), except that ``temperature: 0`` means greedy here (TGI rejects it). ``details``
defaults to false, as TGI's router does (the OpenAPI file says true). ``generated_text`` keeps a stop sequence that
ended generation, as TGI does. Token log-probabilities are the model's own, before temperature/top-k/top-p.
Parameters the embedded server does not implement (best_of > 1, penalties, typical_p, watermark, grammar, adapters)
are refused with 422 unless they hold their no-op value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comptrust_serve.embedded.codec import Codec
from comptrust_serve.embedded.fields import (
    as_object,
    new_token_budget,
    opt_bool,
    opt_float,
    opt_int,
    opt_seed,
    opt_str_list,
    reject_unsupported,
)
from comptrust_serve.embedded.types import GenRequest, GenResult, InvalidRequest, Limits, Sampling

__all__ = [
    "GenerateCall",
    "info_body",
    "parse_generate",
    "render_generate",
    "render_stream_end",
    "render_stream_token",
    "render_tokenize",
    "tgi_sampling",
]

_UNSUPPORTED: Mapping[str, object] = {
    "best_of": 1,
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "typical_p": 1.0,
    "watermark": False,
    "grammar": None,
    "adapter_id": None,
    "stream": False,
}


@dataclass(frozen=True)
class GenerateCall:
    request: GenRequest
    inputs: str
    details: bool
    decoder_input_details: bool
    return_full_text: bool


def tgi_sampling(params: Mapping[str, Any]) -> Sampling:
    """TGI's rule: greedy unless ``do_sample`` or a warper is set; ``temperature: 0`` is greedy."""
    do_sample = opt_bool(params, "do_sample", False)
    temperature = opt_float(params, "temperature")
    top_k = opt_int(params, "top_k", minimum=1)
    top_p = opt_float(params, "top_p")
    seed = opt_seed(params)
    if temperature is not None and temperature < 0:
        raise InvalidRequest("`temperature` must be >= 0 (0 means greedy)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidRequest("`top_p` must be > 0.0 and <= 1.0")
    if top_p == 1.0:
        top_p = None
    warped = (temperature is not None and temperature != 1.0) or top_k is not None or top_p is not None
    greedy = temperature == 0.0 or not (do_sample or warped)
    if greedy:
        return Sampling(greedy=True)
    return Sampling(greedy=False, temperature=temperature or 1.0, top_k=top_k, top_p=top_p, seed=seed)


def parse_generate(body: object, codec: Codec, limits: Limits, *, stream: bool = False) -> GenerateCall:
    """Validate a ``GenerateRequest`` body and turn it into one engine request (for ``/generate_stream`` when
    ``stream``: every token's log-probability is computed, as TGI streams them)."""
    obj = as_object(body, "body")
    inputs = obj.get("inputs")
    if not isinstance(inputs, str):
        raise InvalidRequest("`inputs` must be a string")
    if not inputs:
        raise InvalidRequest("`inputs` cannot be empty")
    params = as_object(obj.get("parameters"), "parameters")
    reject_unsupported(params, _UNSUPPORTED)
    if not stream:
        reject_unsupported(obj, {"stream": False})
    sampling = tgi_sampling(params)
    max_new = opt_int(params, "max_new_tokens", minimum=0)
    if max_new == 0:
        raise InvalidRequest("`max_new_tokens` must be strictly positive")
    stop = opt_str_list(params, "stop", max_items=limits.max_stop_sequences)
    truncate = opt_int(params, "truncate", minimum=1)
    top_n = opt_int(params, "top_n_tokens", minimum=0, maximum=limits.max_top_n_tokens) or 0
    details = opt_bool(params, "details", False)
    decoder_input_details = opt_bool(params, "decoder_input_details", False)
    ids = codec.encode(inputs)
    if truncate is not None:
        ids = ids[-truncate:]
    budget = new_token_budget(len(ids), max_new, limits, "max_new_tokens")
    request = GenRequest(
        prompt_ids=ids,
        max_new_tokens=budget,
        sampling=sampling,
        stop=stop,
        logprobs=details or stream,
        top_n=top_n if details or stream else 0,
        prefill_logprobs=details and decoder_input_details,
    )
    return GenerateCall(
        request=request,
        inputs=inputs,
        details=details,
        decoder_input_details=decoder_input_details,
        return_full_text=opt_bool(params, "return_full_text", False),
    )


def _token(codec: Codec, token_id: int, logprob: float | None) -> dict[str, Any]:
    return {
        "id": token_id,
        "text": codec.token_text(token_id),
        "logprob": logprob,
        "special": token_id in codec.special_ids,
    }


def _generated_text(call: GenerateCall, result: GenResult, codec: Codec) -> str:
    text = codec.decode(result.token_ids)
    return call.inputs + text if call.return_full_text else text


def render_stream_token(
    index: int, token: int, logprob: float | None, top: tuple[tuple[int, float], ...] | None, codec: Codec
) -> dict[str, Any]:
    """A ``StreamResponse`` event for one generated token (``index`` counts from 1, as TGI's router does)."""
    event: dict[str, Any] = {
        "index": index,
        "token": _token(codec, token, logprob),
        "generated_text": None,
        "details": None,
    }
    if top is not None:
        event["top_tokens"] = [_token(codec, t, lp) for t, lp in top]
    return event


def render_stream_end(event: dict[str, Any], call: GenerateCall, result: GenResult, codec: Codec) -> dict[str, Any]:
    """The last token's event completed with ``generated_text`` and, when asked, ``StreamDetails``."""
    event = {**event, "generated_text": _generated_text(call, result, codec)}
    if call.details:
        event["details"] = {
            "finish_reason": result.finish_reason,
            "generated_tokens": len(result.token_ids),
            "seed": result.seed,
            "input_length": result.prompt_tokens,
        }
    return event


def render_tokenize(body: object, codec: Codec) -> list[dict[str, Any]]:
    """A ``TokenizeResponse``: the tokens of ``inputs`` with their text and character offsets."""
    inputs = as_object(body, "body").get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise InvalidRequest("`inputs` must be a non-empty string")
    return [
        {"id": token_id, "text": inputs[start:stop], "start": start, "stop": stop}
        for token_id, (start, stop) in codec.encode_with_offsets(inputs)
    ]


def render_generate(call: GenerateCall, result: GenResult, codec: Codec) -> dict[str, Any]:
    """A ``GenerateResponse`` body."""
    body: dict[str, Any] = {"generated_text": _generated_text(call, result, codec)}
    if not call.details:
        return body
    logprobs = result.logprobs or (None,) * len(result.token_ids)
    details: dict[str, Any] = {
        "finish_reason": result.finish_reason,
        "generated_tokens": len(result.token_ids),
        "seed": result.seed,
        "prefill": [],
        "tokens": [_token(codec, t, lp) for t, lp in zip(result.token_ids, logprobs, strict=True)],
    }
    if call.decoder_input_details and result.prefill_logprobs is not None:
        details["prefill"] = [
            {"id": t, "text": codec.token_text(t), "logprob": lp}
            for t, lp in zip(call.request.prompt_ids, result.prefill_logprobs, strict=True)
        ]
    if result.top_tokens is not None:
        details["top_tokens"] = [[_token(codec, t, lp) for t, lp in step] for step in result.top_tokens]
    body["details"] = details
    return body


def info_body(
    *,
    model_id: str,
    limits: Limits,
    max_concurrent_requests: int,
    max_batch: int,
    dtype: str,
    device: str,
    version: str,
) -> dict[str, Any]:
    """An ``Info`` body: every field TGI's schema requires, plus the dtype and device the model runs in."""
    return {
        "model_id": model_id,
        "model_sha": None,
        "model_pipeline_tag": "text-generation",
        "model_dtype": dtype,
        "model_device_type": device,
        "max_concurrent_requests": max_concurrent_requests,
        "max_best_of": 1,
        "max_stop_sequences": limits.max_stop_sequences,
        "max_input_tokens": limits.max_input_tokens,
        "max_total_tokens": limits.max_total_tokens,
        "max_batch_size": max_batch,
        "validation_workers": 1,
        "max_client_batch_size": 1,
        "router": "comptrust-embedded",
        "version": version,
        "sha": None,
        "docker_label": None,
    }
