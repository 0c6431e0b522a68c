"""The aiohttp application: routes, bearer-token check, and TGI-shaped errors.

Routes: ``POST /generate``, ``GET /health``, ``GET /info`` (TGI) and ``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /v1/models`` (OpenAI). Every error body is TGI's ``{"error", "error_type"}``:
422 for invalid parameters, 429 when the queue is full, 424 when generation fails, 401 for a missing or wrong
bearer token (``/health`` needs none), 503 while shutting down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from comptrust_serve.embedded.codec import Codec
from comptrust_serve.embedded.openai import models_body, parse_chat, parse_completion, render_chat, render_completion
from comptrust_serve.embedded.tgi import info_body, parse_generate, render_generate
from comptrust_serve.embedded.types import GenRequest, GenResult, Limits, ServerError

__all__ = ["Backend", "ServerSettings", "create_app"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Backend(Protocol):
    """What the app needs from the generation engine."""

    @property
    def healthy(self) -> bool: ...

    def submit(self, request: GenRequest) -> Future[GenResult]: ...


@dataclass(frozen=True)
class ServerSettings:
    name: str
    limits: Limits
    max_batch: int
    max_concurrent_requests: int
    dtype: str
    device: str
    version: str
    api_key: str | None = field(default=None, repr=False)


def error_response(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


async def _body(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadJson(f"the request body is not valid JSON: {exc}") from exc


class _BadJson(ServerError):
    status = 400
    error_type = "validation"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServerError as exc:
        return error_response(exc.status, str(exc), exc.error_type)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, "http")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "internal")


def _auth(api_key: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/health":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401, "missing or wrong bearer token in the Authorization header", "authentication"
                )
        return await handler(request)

    return check


async def _run(backend: Backend, requests: Sequence[GenRequest]) -> list[GenResult]:
    """Submit every request (all or none), wait for all; cancel the rest when one fails or the client leaves."""
    futures: list[Future[GenResult]] = []
    try:
        for request in requests:
            futures.append(backend.submit(request))
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def create_app(backend: Backend, codec: Codec, settings: ServerSettings) -> web.Application:
    """The embedded server's routes over ``backend``."""
    middlewares: list[Any] = [_errors]
    if settings.api_key:
        middlewares.append(_auth(settings.api_key))
    app = web.Application(middlewares=middlewares, client_max_size=16 * 2**20)
    limits = settings.limits
    created = int(time.time())
    info = info_body(
        model_id=settings.name,
        limits=limits,
        max_concurrent_requests=settings.max_concurrent_requests,
        max_batch=settings.max_batch,
        dtype=settings.dtype,
        device=settings.device,
        version=settings.version,
    )

    async def health(_: web.Request) -> web.Response:
        if backend.healthy:
            return web.Response(status=200)
        return error_response(503, "unhealthy", "healthcheck")

    async def get_info(_: web.Request) -> web.Response:
        return web.json_response(info)

    async def generate(request: web.Request) -> web.Response:
        call = parse_generate(await _body(request), codec, limits)
        (result,) = await _run(backend, [call.request])
        return web.json_response(render_generate(call, result, codec))

    async def chat(request: web.Request) -> web.Response:
        call = parse_chat(await _body(request), codec, limits)
        results = await _run(backend, call.requests)
        return web.json_response(render_chat(call, results, codec, settings.name))

    async def completions(request: web.Request) -> web.Response:
        call = parse_completion(await _body(request), codec, limits)
        results = await _run(backend, call.requests)
        return web.json_response(render_completion(call, results, codec, settings.name))

    async def models(_: web.Request) -> web.Response:
        return web.json_response(models_body(settings.name, created))

    app.add_routes(
        [
            web.get("/health", health),
            web.get("/info", get_info),
            web.post("/generate", generate),
            web.post("/v1/chat/completions", chat),
            web.post("/v1/completions", completions),
            web.get("/v1/models", models),
        ]
    )
    return app
