"""The protocol interface: how one request becomes an HTTP call, and its JSON answer a generation."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aiohttp
from comptrust_core import Endpoint, EndpointError, GenerationParams, RequestSpec

__all__ = [
    "Generation",
    "HttpCall",
    "ProtocolClient",
    "ProtocolError",
    "chat_body",
    "chat_choice",
    "get_json",
    "sampling_fields",
]


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[float] | None = None
    prompt_logprobs: tuple[float | None, ...] | None = None
    """One entry per prompt token, ``None`` where the server gives none (the first token), when asked for."""


@dataclass(frozen=True)
class HttpCall:
    path: str
    body: dict[str, Any]


class ProtocolError(Exception):
    """A server answered 200 with a body this protocol cannot read (retried as a transient fault)."""


def server_root(url: str) -> str:
    """The server's root for an endpoint URL: the URL itself, or, for an OpenAI-style API base (``.../v1``, as the
    openai SDK's ``base_url`` takes it: ``https://host/v1``, ``https://host/api/v1``), what is left without ``/v1``."""
    return url.removesuffix("/v1")


def openai_bases(url: str) -> tuple[str, ...]:
    """Where an OpenAI-compatible API may live for an endpoint URL, most likely first: the URL itself when it ends
    in ``/v1`` (the SDK's ``base_url``: kept as it is, never doubled); else ``URL/v1`` (a server's root, as vLLM and
    TGI serve it), then the URL itself (a hosted API whose base has no ``/v1``)."""
    return (url,) if url.endswith("/v1") else (url + "/v1", url)


async def get_json(
    session: aiohttp.ClientSession, endpoint: Endpoint, path: str, base: str | None = None
) -> tuple[int, Any]:
    """GET ``base + path`` (``base``: the endpoint's URL by default); (status, parsed JSON or None). Connection
    failures become a one-line :class:`EndpointError`."""
    url = (base if base is not None else endpoint.url) + path
    try:
        async with session.get(url) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body) if body else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                return resp.status, None
    except aiohttp.ClientConnectorError as exc:
        raise EndpointError(
            f"endpoint {endpoint.name} at {endpoint.url} is unreachable ({exc.os_error or exc}); "
            "start the server (uv run serve ...) or fix the URL"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EndpointError(
            f"endpoint {endpoint.name} at {endpoint.url} did not answer GET {url} ({type(exc).__name__}); "
            "is it a running inference server?"
        ) from None


class ProtocolClient(ABC):
    """One endpoint's protocol. Holds the API key only to put it in the Authorization header."""

    name: ClassVar[str]

    def __init__(self, endpoint: Endpoint, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.model = endpoint.model
        self._api_key = api_key
        self.base = endpoint.url
        """What this protocol's paths are relative to (set by :meth:`probe` where the URL leaves a choice)."""

    def url(self, path: str) -> str:
        """The full URL of one of this protocol's paths."""
        return self.base + path

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}({self.endpoint.name!r}, {self.endpoint.url!r})"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def template(self, request: RequestSpec) -> Literal["server", "none"]:
        """Chat messages are rendered by the server's chat template; raw prompts go as they are."""
        return "server" if request.messages is not None else "none"

    @abstractmethod
    async def probe(self, session: aiohttp.ClientSession) -> str:
        """Check that the endpoint is up and speaks this protocol; a one-line description (e.g. the model id)."""

    @abstractmethod
    def build(self, request: RequestSpec) -> HttpCall: ...

    @abstractmethod
    def parse(self, call: HttpCall, payload: Any) -> Generation: ...


def chat_choice(payload: Any) -> Generation:
    """An OpenAI-style chat completion (TGI's /v1/chat/completions answers the same way)."""
    try:
        choice = payload["choices"][0]
        content = choice["message"]["content"]
        usage = payload.get("usage") or {}
        logprobs = None
        if choice.get("logprobs"):
            logprobs = [float(t["logprob"]) for t in choice["logprobs"].get("content") or []]
        return Generation(
            text=content if isinstance(content, str) else "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            logprobs=logprobs,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ProtocolError(f"not a chat completion ({type(exc).__name__}: {exc})") from None


def chat_body(request: RequestSpec, model: str, top_k: bool) -> dict[str, Any]:
    """The OpenAI chat-completions body; ``top_k`` only where the server takes it (vLLM does, TGI's chat does not)."""
    params = request.params
    assert request.messages is not None
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in request.messages],
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
    }
    body.update(sampling_fields(params, top_k=top_k))
    if params.logprobs:
        body["logprobs"] = True
    return body


def sampling_fields(params: GenerationParams, *, top_k: bool) -> dict[str, Any]:
    """``top_p``, ``top_k`` and ``seed`` (only when sampling) and ``stop``: spelled alike by TGI's /generate
    parameters and OpenAI-style bodies. ``top_k`` only where the route takes it.

    A greedy request carries a seed in its record (it is part of the request's identity) but never sends it: it
    changes nothing there, and a seed on every request, greedy ones included, is what crashed vLLM's CPU engine
    (``RuntimeError: CPU Generator does not use offset``, with chunked prefill) in our traffic."""
    fields: dict[str, Any] = {}
    if not params.greedy:
        if params.top_p is not None and params.top_p < 1.0:
            fields["top_p"] = params.top_p
        if top_k and params.top_k is not None:
            fields["top_k"] = params.top_k
        if params.seed is not None:
            fields["seed"] = params.seed
    if params.stop:
        fields["stop"] = list(params.stop)
    return fields
