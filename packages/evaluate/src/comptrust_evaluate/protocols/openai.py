"""OpenAI-compatible APIs (vLLM, TGI's compatibility routes, hosted APIs): ``chat/completions`` for chat messages,
``completions`` for raw prompts, under the API's base (``https://host/v1``, ``https://host/api/v1``, or a server's
root plus ``/v1``: :func:`~comptrust_evaluate.protocols.base.openai_bases`); a model name; an optional bearer key."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from comptrust_core import EndpointError, RequestSpec

from comptrust_evaluate.protocols import protocol
from comptrust_evaluate.protocols.base import (
    Generation,
    HttpCall,
    ProtocolClient,
    ProtocolError,
    chat_body,
    chat_choice,
    get_json,
    openai_bases,
    sampling_fields,
)

__all__ = ["OpenAIClient"]

CHAT = "/chat/completions"

log = logging.getLogger(__name__)


@protocol("openai")
class OpenAIClient(ProtocolClient):
    name = "openai"

    async def probe(self, session: aiohttp.ClientSession) -> str:
        ep = self.endpoint
        tried = []
        for base in openai_bases(ep.url):
            status, models = await get_json(session, ep, "/models", base)
            if status in (401, 403):
                hint = f"check ${ep.api_key_env}" if ep.api_key_env else "pass --api-key-env VAR"
                raise EndpointError(f"endpoint {ep.name} refused GET {base}/models (HTTP {status}); {hint}")
            if status == 200 and isinstance(models, dict) and isinstance(models.get("data"), list):
                self.base = base
                break
            tried.append(f"GET {base}/models: HTTP {status}")
        else:
            raise EndpointError(
                f"endpoint {ep.name} at {ep.url} does not speak the OpenAI API ({'; '.join(tried)}); give the API's "
                "base URL as the openai SDK takes it (https://host/v1, https://host/api/v1) or the server's root, "
                "or try --protocol tgi"
            )
        ids = [str(m.get("id")) for m in models["data"] if isinstance(m, dict) and m.get("id")]
        if self.model is None:
            if len(ids) != 1:
                listed = ", ".join(ids[:10]) or "none listed"
                raise EndpointError(f"endpoint {ep.name} serves {len(ids)} models ({listed}); pass --model NAME")
            self.model = ids[0]
        elif ids and self.model not in ids:
            log.warning("endpoint %s does not list model %r (it lists %s)", ep.name, self.model, ", ".join(ids[:10]))
        return f"OpenAI-compatible API serving {self.model}"

    def build(self, request: RequestSpec) -> HttpCall:
        model = self.model or ""
        if request.messages is not None:
            return HttpCall(CHAT, chat_body(request, model, top_k=True))
        params = request.params
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        body.update(sampling_fields(params, top_k=True))
        if params.logprobs:
            body["logprobs"] = 1
        if params.prompt_logprobs:  # the prompt's own logprobs come back echoed in front of the completion's
            body["echo"] = True
            body.setdefault("logprobs", 0)
        return HttpCall("/completions", body)

    def parse(self, call: HttpCall, payload: Any) -> Generation:
        if call.path == CHAT:
            return chat_choice(payload)
        try:
            choice = payload["choices"][0]
            usage = payload.get("usage") or {}
            lp = choice.get("logprobs")
            tokens = lp["token_logprobs"] if isinstance(lp, dict) else None
            text = str(choice["text"])
            prompt_logprobs = None
            if call.body.get("echo"):
                prompt_logprobs, tokens, text = _split_echo(call, tokens, text, usage.get("prompt_tokens"))
            logprobs = [float(x) for x in tokens if x is not None] if tokens is not None else None
            return Generation(
                text=text,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                logprobs=logprobs,
                prompt_logprobs=prompt_logprobs,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ProtocolError(f"not a completion ({type(exc).__name__}: {exc})") from None


def _split_echo(
    call: HttpCall, tokens: list[Any] | None, text: str, prompt_tokens: Any
) -> tuple[tuple[float | None, ...], list[Any], str]:
    """An echoed completion: the first ``usage.prompt_tokens`` logprobs are the prompt's; the text starts with it."""
    if tokens is None or not isinstance(prompt_tokens, int) or not 0 < prompt_tokens <= len(tokens):
        raise ProtocolError("asked for echo with logprobs but the answer lacks the prompt's token logprobs")
    prompt = str(call.body["prompt"])
    head = tuple(None if x is None else float(x) for x in tokens[:prompt_tokens])
    return head, tokens[prompt_tokens:], text[len(prompt) :] if text.startswith(prompt) else text
