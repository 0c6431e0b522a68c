"""TGI's HTTP API: raw prompts to ``POST /generate`` (with details), chat messages to ``/v1/chat/completions``,
which TGI 3.x renders with the model's chat template."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
from comptrust_core import Endpoint, EndpointError, RequestSpec

from comptrust_evaluate.protocols import protocol
from comptrust_evaluate.protocols.base import (
    Generation,
    HttpCall,
    ProtocolClient,
    ProtocolError,
    chat_body,
    chat_choice,
    get_json,
    sampling_fields,
    server_root,
)

__all__ = ["TgiClient"]


def _logprob(value: Any) -> float | None:
    """TGI gives the first prefill token a null (or NaN) logprob: nothing precedes it."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


@protocol("tgi")
class TgiClient(ProtocolClient):
    name = "tgi"

    def __init__(self, endpoint: Endpoint, api_key: str | None = None) -> None:
        super().__init__(endpoint, api_key)
        self.base = server_root(endpoint.url)  # TGI's routes hang off its root; a URL ending in /v1 names its API

    async def probe(self, session: aiohttp.ClientSession) -> str:
        ep = self.endpoint
        status, _ = await get_json(session, ep, "/health", self.base)
        if status == 503:
            raise EndpointError(
                f"endpoint {ep.name} at {ep.url} is up but unhealthy (GET /health: 503); wait or restart it"
            )
        if status != 200:
            raise EndpointError(
                f"endpoint {ep.name} at {ep.url} does not speak TGI (GET /health answered HTTP {status}); "
                "try --protocol openai"
            )
        status, info = await get_json(session, ep, "/info", self.base)
        if status != 200 or not isinstance(info, dict) or "model_id" not in info:
            raise EndpointError(
                f"endpoint {ep.name} at {ep.url} does not speak TGI (GET /info answered HTTP {status} without a "
                "model_id); try --protocol openai"
            )
        return f"TGI {info.get('version', '?')} serving {info['model_id']}"

    def build(self, request: RequestSpec) -> HttpCall:
        if request.messages is not None:
            return HttpCall("/v1/chat/completions", chat_body(request, self.model or "tgi", top_k=False))
        params = request.params
        parameters: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "details": True,
            "return_full_text": False,
            "do_sample": not params.greedy,
        }
        if params.prompt_logprobs:
            parameters["decoder_input_details"] = True
        if not params.greedy:
            parameters["temperature"] = params.temperature
        parameters.update(sampling_fields(params, top_k=True))
        return HttpCall("/generate", {"inputs": request.prompt, "parameters": parameters})

    def parse(self, call: HttpCall, payload: Any) -> Generation:
        if call.path != "/generate":
            return chat_choice(payload)
        try:
            text = payload["generated_text"]
            details = payload.get("details") or {}
            tokens = details.get("tokens") or []
            logprobs = [float(t["logprob"]) for t in tokens if t.get("logprob") is not None] or None
            prefill = details.get("prefill") or None
            prompt_logprobs = None
            if call.body["parameters"].get("decoder_input_details"):
                if not prefill:
                    raise ProtocolError("asked for decoder_input_details but the answer has no prefill tokens")
                prompt_logprobs = tuple(_logprob(t.get("logprob")) for t in prefill)
            return Generation(
                text=str(text),
                finish_reason=details.get("finish_reason"),
                prompt_tokens=len(prefill) if prefill else None,
                completion_tokens=details.get("generated_tokens"),
                logprobs=logprobs,
                prompt_logprobs=prompt_logprobs,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProtocolError(f"not a TGI /generate answer ({type(exc).__name__}: {exc})") from None
