"""OpenAI's API: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``.

Semantics follow OpenAI (and vLLM): ``temperature`` defaults to 1 (sampling); 0 means greedy; the text ends before a
stop sequence that ended generation; ``finish_reason`` is ``stop`` (EOS or a stop sequence) or ``length``; ``n``
choices are generated as ``n`` rows, choice ``i`` seeded with ``seed + i``. ``/v1/completions`` takes ``echo``: the
prompt leads each choice's text, and with ``logprobs`` its tokens lead the legacy logprobs object (the first prompt
token's log-probability is null; with ``logprobs=N`` each later prompt position gets its ``N`` most likely tokens, as
vLLM gives them). ``stream: true`` answers with server-sent events, ``chat.completion.chunk`` /
``text_completion`` chunks and a final ``data: [DONE]`` (``stream_options.include_usage`` adds a usage chunk): the
shape the openai SDK and huggingface_hub read. Errors use TGI's ``{"error", "error_type"}`` body, as TGI's OpenAI
routes do. Tools, penalties, and streaming a completion's logprobs or echo are refused with 422.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

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
    "OpenAICall",
    "StreamText",
    "chat_token_logprobs",
    "chunk",
    "chunk_choice",
    "finish_reason",
    "models_body",
    "parse_chat",
    "parse_completion",
    "render_chat",
    "render_completion",
    "usage_body",
]

_UNSUPPORTED: Mapping[str, object] = {
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
    "logit_bias": None,
    "tools": None,
    "response_format": None,
    "suffix": None,
    "best_of": 1,
}
_UNSUPPORTED_CHAT: Mapping[str, object] = {**_UNSUPPORTED, "echo": False}
_ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class OpenAICall:
    """One API call: its rows (``n`` per prompt) and whether token log-probabilities go back."""

    kind: Literal["chat", "completion"]
    requests: tuple[GenRequest, ...]
    n: int
    logprobs: bool
    top_logprobs: int
    echo_prompts: tuple[str, ...] | None = None
    stream: bool = False
    include_usage: bool = False


def _sampling(obj: Mapping[str, Any]) -> Sampling:
    temperature = opt_float(obj, "temperature")
    top_p = opt_float(obj, "top_p")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequest("`temperature` must be between 0 and 2")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidRequest("`top_p` must be > 0.0 and <= 1.0")
    top_k = opt_int(obj, "top_k", minimum=1)
    if temperature == 0.0:
        return Sampling(greedy=True)
    return Sampling(
        greedy=False,
        temperature=1.0 if temperature is None else temperature,
        top_k=top_k,
        top_p=None if top_p == 1.0 else top_p,
        seed=opt_seed(obj),
    )


def _rows(
    prompts: Sequence[list[int]],
    obj: Mapping[str, Any],
    limits: Limits,
    *,
    logprobs: bool,
    top_n: int,
    prefill: bool = False,
) -> tuple[tuple[GenRequest, ...], int]:
    n = opt_int(obj, "n", minimum=1, maximum=limits.max_choices) or 1
    if n * len(prompts) > limits.max_choices:
        raise InvalidRequest(f"at most {limits.max_choices} choices per request. Given: {n * len(prompts)}")
    max_tokens = opt_int(obj, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = opt_int(obj, "max_tokens", minimum=1)
    stop = opt_str_list(obj, "stop", max_items=limits.max_stop_sequences, allow_str=True)
    sampling = _sampling(obj)
    rows: list[GenRequest] = []
    for ids in prompts:
        budget = new_token_budget(len(ids), max_tokens, limits, "max_tokens")
        for i in range(n):
            seeded = sampling
            if not sampling.greedy and sampling.seed is not None:
                seeded = replace(sampling, seed=(sampling.seed + i) % 2**64)
            rows.append(
                GenRequest(
                    prompt_ids=list(ids),
                    max_new_tokens=budget,
                    sampling=seeded,
                    stop=stop,
                    logprobs=logprobs,
                    top_n=top_n,
                    prefill_logprobs=prefill,
                )
            )
    return tuple(rows), n


def _message_text(message: object, index: int) -> dict[str, str]:
    if not isinstance(message, dict):
        raise InvalidRequest(f"`messages[{index}]` must be an object with `role` and `content`")
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequest(f"`messages[{index}].role` must be one of {', '.join(_ROLES)}")
    content = message.get("content")
    if message.get("tool_calls"):
        raise InvalidRequest("tool calls are not supported by the comptrust embedded server")
    if content is None:
        content = ""
    if isinstance(content, list):
        parts: list[str] = []
        for chunk in content:
            if not isinstance(chunk, dict) or chunk.get("type") != "text" or not isinstance(chunk.get("text"), str):
                raise InvalidRequest(f"`messages[{index}].content` may only hold text chunks here")
            parts.append(chunk["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise InvalidRequest(f"`messages[{index}].content` must be a string or a list of text chunks")
    return {"role": role, "content": content}


def _logprob_options(obj: Mapping[str, Any], limits: Limits, *, chat: bool) -> tuple[bool, int]:
    if chat:
        top = opt_int(obj, "top_logprobs", minimum=0, maximum=limits.max_top_n_tokens) or 0
        return opt_bool(obj, "logprobs", False) or top > 0, top
    legacy = opt_int(obj, "logprobs", minimum=0, maximum=limits.max_top_n_tokens)
    return legacy is not None, legacy or 0


def _stream_options(obj: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = opt_bool(obj, "stream", False)
    options = obj.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("`stream_options` must be an object")
    if options and not stream:
        raise InvalidRequest("`stream_options` can only be given with `stream: true`")
    return stream, bool(options and options.get("include_usage"))


def parse_chat(body: object, codec: Codec, limits: Limits) -> OpenAICall:
    obj = as_object(body, "body")
    reject_unsupported(obj, _UNSUPPORTED_CHAT)
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty list")
    rendered = codec.render_chat([_message_text(m, i) for i, m in enumerate(messages)])
    ids = codec.encode(rendered, add_special_tokens=False)
    logprobs, top = _logprob_options(obj, limits, chat=True)
    rows, n = _rows([ids], obj, limits, logprobs=logprobs, top_n=top)
    stream, usage = _stream_options(obj)
    return OpenAICall("chat", rows, n, logprobs, top, stream=stream, include_usage=usage)


def parse_completion(body: object, codec: Codec, limits: Limits) -> OpenAICall:
    obj = as_object(body, "body")
    reject_unsupported(obj, _UNSUPPORTED)
    prompt = obj.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InvalidRequest("`prompt` must be a non-empty string or a non-empty list of non-empty strings")
    logprobs, top = _logprob_options(obj, limits, chat=False)
    echo = opt_bool(obj, "echo", False)
    stream, usage = _stream_options(obj)
    if stream and (logprobs or echo):
        raise InvalidRequest("`logprobs` and `echo` are not supported with `stream` on /v1/completions here")
    encoded = [codec.encode(p) for p in prompts]
    rows, n = _rows(encoded, obj, limits, logprobs=logprobs, top_n=top, prefill=echo and logprobs)
    return OpenAICall(
        "completion", rows, n, logprobs, top, tuple(prompts) if echo else None, stream=stream, include_usage=usage
    )


def _text(result: GenResult, codec: Codec) -> str:
    text = codec.decode(result.token_ids)
    if result.stop_sequence is not None:
        cut = text.find(result.stop_sequence)
        if cut >= 0:
            text = text[:cut]
    return text


def _finish(result: GenResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _envelope(
    call: OpenAICall, model: str, results: Sequence[GenResult], choices: list[dict[str, Any]]
) -> dict[str, Any]:
    prompt_tokens = sum(r.prompt_tokens for r in results[:: call.n])
    completion = sum(len(r.token_ids) for r in results)
    chat = call.kind == "chat"
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "comptrust-embedded",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    }


def render_chat(call: OpenAICall, results: Sequence[GenResult], codec: Codec, model: str) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        logprobs: dict[str, Any] | None = None
        if call.logprobs and result.logprobs is not None:
            tops = result.top_tokens or ((),) * len(result.token_ids)
            logprobs = {
                "content": [
                    {
                        "token": codec.token_text(t),
                        "logprob": lp,
                        "top_logprobs": [{"token": codec.token_text(i), "logprob": v} for i, v in top],
                    }
                    for t, lp, top in zip(result.token_ids, result.logprobs, tops, strict=True)
                ]
            }
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": _text(result, codec)},
                "logprobs": logprobs,
                "finish_reason": _finish(result),
            }
        )
    return _envelope(call, model, results, choices)


def _legacy_logprobs(request: GenRequest, result: GenResult, codec: Codec, echo: bool) -> dict[str, Any] | None:
    """OpenAI's legacy completion logprobs object (prompt tokens first when ``echo``)."""
    if result.logprobs is None:
        return None
    ids = list(result.token_ids)
    token_logprobs: list[float | None] = list(result.logprobs)
    tops: list[dict[str, float] | None] | None = None
    if result.top_tokens is not None:
        tops = [{codec.token_text(i): v for i, v in top} for top in result.top_tokens]
    if echo:
        prefill = result.prefill_logprobs or (None,) * len(request.prompt_ids)
        ids = [*request.prompt_ids, *ids]
        token_logprobs = [*prefill, *token_logprobs]
        if tops is not None:  # the prompt's own alternatives, as vLLM gives them (none before the first token)
            prompt_tops = result.prefill_top_tokens or (None,) * len(request.prompt_ids)
            heads = [None if top is None else {codec.token_text(i): v for i, v in top} for top in prompt_tops]
            tops = [*heads, *tops]
    texts = [codec.token_text(t) for t in ids]
    return {
        "tokens": texts,
        "token_logprobs": token_logprobs,
        "top_logprobs": tops,
        "text_offset": [0, *itertools.accumulate(len(t) for t in texts)][: len(texts)],
    }


def render_completion(call: OpenAICall, results: Sequence[GenResult], codec: Codec, model: str) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    echo = call.echo_prompts is not None
    for index, (request, result) in enumerate(zip(call.requests, results, strict=True)):
        logprobs = _legacy_logprobs(request, result, codec, echo) if call.logprobs else None
        text = _text(result, codec)
        if call.echo_prompts is not None:
            text = call.echo_prompts[index // call.n] + text
        choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": _finish(result)})
    return _envelope(call, model, results, choices)


class StreamText:
    """One choice's text as it streams: each new token's decoded text, holding back what could still turn out to be
    the start of a stop sequence (or half a character), so that the pieces add up to the final text."""

    def __init__(self, codec: Codec, stop: Sequence[str]) -> None:
        self.codec = codec
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.codec.decode(self.ids)
        ready = text[: len(text) - self.holdback] if self.holdback else text
        if ready.endswith("\ufffd"):  # an incomplete character: wait for its next byte
            ready = ready[:-1]
        return self._advance(ready)

    def finish(self, result: GenResult) -> str:
        return self._advance(_text(result, self.codec))

    def _advance(self, text: str) -> str:
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece


def chunk(call: OpenAICall, call_id: str, created: int, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """One streamed chunk (``chat.completion.chunk`` or ``text_completion``)."""
    chat = call.kind == "chat"
    return {
        "id": call_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "comptrust-embedded",
        "choices": choices,
    }


def chunk_choice(
    call: OpenAICall, index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None = None, *, first: bool
) -> dict[str, Any]:
    if call.kind == "chat":
        delta: dict[str, Any] = {"content": text}
        if first:
            delta["role"] = "assistant"
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def chat_token_logprobs(
    codec: Codec, token: int, logprob: float | None, top: Sequence[tuple[int, float]] | None
) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": codec.token_text(token),
                "logprob": logprob,
                "top_logprobs": [{"token": codec.token_text(i), "logprob": v} for i, v in (top or ())],
            }
        ]
    }


def usage_body(call: OpenAICall, results: Sequence[GenResult]) -> dict[str, int]:
    prompt_tokens = sum(r.prompt_tokens for r in results[:: call.n])
    completion = sum(len(r.token_ids) for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def finish_reason(result: GenResult) -> str:
    return _finish(result)


def models_body(model: str, created: int) -> dict[str, Any]:
    """OpenAI's model list (TGI answers a bare ModelInfo; OpenAI clients expect the list)."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "comptrust"}]}
