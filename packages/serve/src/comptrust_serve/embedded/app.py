"""The aiohttp application: routes, bearer-token check, and TGI-shaped errors.

Routes: ``POST /generate``, ``POST /generate_stream`` (server-sent events), ``POST /`` (TGI's compat route, which
huggingface_hub's ``text_generation`` posts to: either of the two by the body's ``stream``), ``POST /tokenize``,
``GET /health``, ``GET /info``, ``GET /metrics`` (TGI) and ``POST /v1/chat/completions``, ``POST /v1/completions``
(each streamed with ``stream: true``), ``GET /v1/models`` (OpenAI). Every error body is TGI's
``{"error", "error_type"}``: 422 for invalid parameters, 429 when the queue is full, 424 when generation fails, 401
for a missing or wrong bearer token (``/health`` needs none), 503 while shutting down; an error after a stream has
started is its last event, in the same shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from comptrust_serve.embedded.codec import Codec
from comptrust_serve.embedded.metrics import Metrics
from comptrust_serve.embedded.openai import (
    OpenAICall,
    StreamText,
    chat_token_logprobs,
    chunk,
    chunk_choice,
    finish_reason,
    models_body,
    parse_chat,
    parse_completion,
    render_chat,
    render_completion,
    usage_body,
)
from comptrust_serve.embedded.tgi import (
    GenerateCall,
    info_body,
    parse_generate,
    render_generate,
    render_stream_end,
    render_stream_token,
    render_tokenize,
)
from comptrust_serve.embedded.types import GenRequest, GenResult, Limits, ServerError, TokenCallback

__all__ = ["Backend", "ServerSettings", "create_app"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Backend(Protocol):
    """What the app needs from the generation engine."""

    @property
    def healthy(self) -> bool: ...

    @property
    def queue_size(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

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


_ERROR_TYPE = web.ResponseKey("error_type", str)  # set on error responses, for the metrics
_GENERATION_ROUTES = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"})


def error_response(status: int, message: str, error_type: str) -> web.Response:
    response = web.json_response({"error": message, "error_type": error_type}, status=status)
    response[_ERROR_TYPE] = error_type
    return response


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


def _meter(metrics: Metrics) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def meter(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _GENERATION_ROUTES:
            return await handler(request)
        started = time.perf_counter()
        error_type: str | None = "cancelled"
        try:
            response = await handler(request)
            error_type = response.get(_ERROR_TYPE)
            return response
        finally:
            metrics.request_done(time.perf_counter() - started, error_type)

    return meter


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


async def _run(backend: Backend, requests: Sequence[GenRequest], metrics: Metrics) -> list[GenResult]:
    """Submit every request (all or none), wait for all; cancel the rest when one fails or the client leaves."""
    futures: list[Future[GenResult]] = []
    try:
        for request in requests:
            futures.append(backend.submit(request))
        results = list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    for result in results:
        metrics.sequence_done(result.prompt_tokens, len(result.token_ids))
    return results


def _sse(event: dict[str, Any]) -> bytes:
    return b"data:" + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    request: web.Request, backend: Backend, call: GenerateCall, codec: Codec, metrics: Metrics
) -> web.StreamResponse:
    """TGI's ``/generate_stream``: one ``data:`` event per token; the last one carries ``generated_text`` (and
    ``details`` when asked). Errors before the first byte are plain JSON responses; later ones are a final event."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, float | None, tuple[tuple[int, float], ...] | None] | None] = asyncio.Queue()

    def push(item: tuple[int, float | None, tuple[tuple[int, float], ...] | None] | None) -> None:
        with suppress(RuntimeError):  # the loop closed: nobody is listening any more
            loop.call_soon_threadsafe(events.put_nowait, item)

    call.request.on_token = lambda token, logprob, top: push((token, logprob, top))
    future = backend.submit(call.request)  # Overloaded / ShuttingDown become JSON errors here
    future.add_done_callback(lambda _: push(None))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        pending: dict[str, Any] | None = None
        index = 0
        while (item := await events.get()) is not None:
            if pending is not None:
                await response.write(_sse(pending))
            index += 1
            pending = render_stream_token(index, *item, codec)
        try:
            result = await asyncio.wrap_future(future)
        except ServerError as exc:
            response[_ERROR_TYPE] = exc.error_type
            await response.write(_sse({"error": str(exc), "error_type": exc.error_type}))
        else:
            metrics.sequence_done(result.prompt_tokens, len(result.token_ids))
            if pending is not None:
                await response.write(_sse(render_stream_end(pending, call, result, codec)))
        await response.write_eof()
        return response
    finally:
        future.cancel()


_Event = tuple[int, int, float | None, tuple[tuple[int, float], ...] | None] | tuple[int, None, None, None]


async def _openai_stream(
    request: web.Request, backend: Backend, call: OpenAICall, codec: Codec, metrics: Metrics, *, model: str
) -> web.StreamResponse:
    """OpenAI's streaming: a chunk per token of each choice (choices interleave, by ``index``), each choice's last
    chunk carrying its ``finish_reason``, a usage chunk when asked, then ``data: [DONE]``. Errors before the first
    byte are plain JSON responses; later ones are an event in TGI's shape, then ``[DONE]``."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[_Event] = asyncio.Queue()

    def push(item: _Event) -> None:
        with suppress(RuntimeError):  # the loop closed: nobody is listening any more
            loop.call_soon_threadsafe(events.put_nowait, item)

    def on_token(index: int) -> TokenCallback:
        return lambda token, logprob, top: push((index, token, logprob, top))

    def on_done(index: int) -> Callable[[Future[GenResult]], None]:
        return lambda _: push((index, None, None, None))

    rows = list(call.requests)
    for index, row in enumerate(rows):
        row.on_token = on_token(index)
    futures = [backend.submit(row) for row in rows]  # Overloaded / ShuttingDown become JSON errors here
    for index, future in enumerate(futures):
        future.add_done_callback(on_done(index))
    texts = [StreamText(codec, row.stop) for row in rows]
    started = [False] * len(rows)
    call_id = f"{'chatcmpl' if call.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

    async def send(index: int, text: str, finish: str | None, logprobs: dict[str, Any] | None = None) -> None:
        first = not started[index]
        started[index] = True
        choice = chunk_choice(call, index, text, finish, logprobs, first=first)
        await response.write(_sse(chunk(call, call_id, created, model, [choice])))

    try:
        await response.prepare(request)
        results: list[GenResult | None] = [None] * len(rows)
        open_rows = len(rows)
        while open_rows:
            index, token, logprob, top = await events.get()
            if token is not None:
                logprobs = (
                    chat_token_logprobs(codec, token, logprob, top) if call.logprobs and call.kind == "chat" else None
                )
                await send(index, texts[index].push(token), None, logprobs)
                continue
            open_rows -= 1
            try:
                result = await asyncio.wrap_future(futures[index])
            except ServerError as exc:
                response[_ERROR_TYPE] = exc.error_type
                await response.write(_sse({"error": str(exc), "error_type": exc.error_type}))
                break
            results[index] = result
            metrics.sequence_done(result.prompt_tokens, len(result.token_ids))
            await send(index, texts[index].finish(result), finish_reason(result))
        else:
            if call.include_usage:
                done = [r for r in results if r is not None]
                usage = {**chunk(call, call_id, created, model, []), "usage": usage_body(call, done)}
                await response.write(_sse(usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    finally:
        for future in futures:
            future.cancel()


def create_app(backend: Backend, codec: Codec, settings: ServerSettings) -> web.Application:
    """The embedded server's routes over ``backend``."""
    metrics = Metrics()
    middlewares: list[Any] = [_meter(metrics), _errors]
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
        (result,) = await _run(backend, [call.request], metrics)
        return web.json_response(render_generate(call, result, codec))

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        call = parse_generate(await _body(request), codec, limits, stream=True)
        return await _stream(request, backend, call, codec, metrics)

    async def compat(request: web.Request) -> web.StreamResponse:
        """TGI's ``POST /``: ``/generate`` (answered as a one-element list) or ``/generate_stream`` by ``stream``."""
        body = await _body(request)
        streamed = isinstance(body, dict) and body.get("stream") is True
        fields = {k: v for k, v in body.items() if k != "stream"} if isinstance(body, dict) else body
        call = parse_generate(fields, codec, limits, stream=streamed)
        if streamed:
            return await _stream(request, backend, call, codec, metrics)
        (result,) = await _run(backend, [call.request], metrics)
        return web.json_response([render_generate(call, result, codec)])

    async def tokenize(request: web.Request) -> web.Response:
        return web.json_response(render_tokenize(await _body(request), codec))

    async def get_metrics(_: web.Request) -> web.Response:
        text = metrics.render(queue_size=backend.queue_size, batch_size=backend.batch_size)
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"})

    async def chat(request: web.Request) -> web.StreamResponse:
        call = parse_chat(await _body(request), codec, limits)
        if call.stream:
            return await _openai_stream(request, backend, call, codec, metrics, model=settings.name)
        results = await _run(backend, call.requests, metrics)
        return web.json_response(render_chat(call, results, codec, settings.name))

    async def completions(request: web.Request) -> web.StreamResponse:
        call = parse_completion(await _body(request), codec, limits)
        if call.stream:
            return await _openai_stream(request, backend, call, codec, metrics, model=settings.name)
        results = await _run(backend, call.requests, metrics)
        return web.json_response(render_completion(call, results, codec, settings.name))

    async def models(_: web.Request) -> web.Response:
        return web.json_response(models_body(settings.name, created))

    app.add_routes(
        [
            web.post("/", compat),
            web.get("/health", health),
            web.get("/info", get_info),
            web.post("/generate", generate),
            web.post("/generate_stream", generate_stream),
            web.post("/tokenize", tokenize),
            web.get("/metrics", get_metrics),
            web.post("/v1/chat/completions", chat),
            web.post("/v1/completions", completions),
            web.get("/v1/models", models),
        ]
    )
    return app
