"""Protocols, a registry: how to talk to an endpoint (``tgi``: TGI's HTTP API; ``openai``: OpenAI-compatible)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from comptrust_core import Endpoint, EndpointError, Protocol

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.protocols.base import (
    Generation,
    HttpCall,
    ProtocolClient,
    ProtocolError,
    get_json,
    openai_bases,
    server_root,
)

__all__ = [
    "Generation",
    "HttpCall",
    "ProtocolClient",
    "ProtocolError",
    "detect_protocol",
    "get_protocol",
    "protocol",
    "protocol_names",
]

PROTOCOLS: Registry[type[ProtocolClient]] = Registry(
    "protocol", {"tgi": "comptrust_evaluate.protocols.tgi", "openai": "comptrust_evaluate.protocols.openai"}
)


def protocol(name: str) -> Callable[[type[ProtocolClient]], type[ProtocolClient]]:
    """Register a :class:`ProtocolClient` subclass under ``name``."""
    return PROTOCOLS.register(name)


def get_protocol(name: str) -> type[ProtocolClient]:
    return PROTOCOLS.get(name)


def protocol_names() -> list[str]:
    return PROTOCOLS.names()


async def detect_protocol(session: aiohttp.ClientSession, endpoint: Endpoint) -> Protocol:
    """``tgi`` if GET <root>/info describes a model, else ``openai`` if GET <base>/models lists models (the bases of
    :func:`~comptrust_evaluate.protocols.base.openai_bases`); else a clear error naming what was asked."""
    root = server_root(endpoint.url)
    status, info = await get_json(session, endpoint, "/info", root)
    if status == 200 and isinstance(info, dict) and "model_id" in info:
        return "tgi"
    tried = [f"GET {root}/info: HTTP {status}"]
    for base in openai_bases(endpoint.url):
        status, models = await get_json(session, endpoint, "/models", base)
        if status == 200 and isinstance(models, dict) and isinstance(models.get("data"), list):
            return "openai"
        if status in (401, 403):
            raise EndpointError(
                f"endpoint {endpoint.name} refused GET {base}/models (HTTP {status}); "
                "pass --api-key-env with the variable that holds its key"
            )
        tried.append(f"GET {base}/models: HTTP {status}")
    raise EndpointError(
        f"endpoint {endpoint.name} at {endpoint.url} speaks neither TGI nor the OpenAI API ({'; '.join(tried)}); "
        "give the server's root (http://host:port) or the API's base as the openai SDK takes it "
        "(https://host/v1, https://host/api/v1), or pass --protocol"
    )
