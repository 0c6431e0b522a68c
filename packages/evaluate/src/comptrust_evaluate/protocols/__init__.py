"""Protocols, a registry: how to talk to an endpoint (``tgi``: TGI's HTTP API; ``openai``: OpenAI-compatible)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from comptrust_core import Endpoint, EndpointError, Protocol

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.protocols.base import Generation, HttpCall, ProtocolClient, ProtocolError, get_json

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
    """``tgi`` if GET /info describes a model, else ``openai`` if GET /v1/models lists models; else a clear error."""
    status, info = await get_json(session, endpoint, "/info")
    if status == 200 and isinstance(info, dict) and "model_id" in info:
        return "tgi"
    status, models = await get_json(session, endpoint, "/v1/models")
    if status == 200 and isinstance(models, dict) and isinstance(models.get("data"), list):
        return "openai"
    if status in (401, 403):
        raise EndpointError(
            f"endpoint {endpoint.name} at {endpoint.url} refused GET /v1/models (HTTP {status}); "
            "pass --api-key-env with the variable that holds its key"
        )
    raise EndpointError(
        f"endpoint {endpoint.name} at {endpoint.url} speaks neither TGI (GET /info) nor the OpenAI API "
        f"(GET /v1/models answered HTTP {status}); check the URL or pass --protocol"
    )
