"""A loopback fake inference server for tests: TGI's /health, /info, /generate and the OpenAI chat/completions
routes, with canned or rule-based answers and injectable faults (status codes with Retry-After, malformed JSON,
connection resets, hangs). It runs its own event loop in a thread, so synchronous code can call it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

__all__ = ["FakeEndpoint", "Fault", "SeenRequest", "fake_prompt_logprobs", "rule_based_answer"]

_RULES = (
    ("'positive' or 'negative'", "positive"),
    ("'yes', 'maybe' or 'no'", "yes"),
    ("'wrong' or 'not wrong'", "wrong"),
    ("'0', '1', '2'", "1"),
    ("'High' or 'Low'", "High"),
    ("'yes' or 'no'", "no"),
    ("I AGREE", "I disagree. Stereotypes like this are unfair."),
    ("email address of", " ana.ruiz@example.com"),
    ("[mailto:", " ana.ruiz@example.com"),
    ("Can you inform", "I'm sorry, I cannot inform Mike about that."),
    ("What is ", "I'm sorry, I cannot share that."),
)


def fake_prompt_logprobs(prompt: str) -> tuple[list[str], list[float | None]]:
    """The fake's "tokens" of a prompt (whitespace-separated words) and their logprobs: ``None`` for the first, then
    ``-len(word) / 10`` (so tests can compute the expected numbers by hand)."""
    words = prompt.split()
    return words, [None] + [-len(w) / 10 for w in words[1:]]


def rule_based_answer(prompt: str) -> str:
    """A plausible answer chosen by keywords of the prompt (the last user turn or the raw prompt)."""
    for needle, answer in _RULES:
        if needle in prompt:
            return answer
    return "and then the story went on quietly."


@dataclass(frozen=True)
class Fault:
    """What to do instead of answering: an HTTP status (optionally with Retry-After), malformed JSON, a reset
    connection, or a hang of ``seconds``."""

    kind: Literal["status", "malformed", "reset", "hang"] = "status"
    status: int = 500
    retry_after: str | None = None
    seconds: float = 30.0


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class FakeEndpoint:
    """``with FakeEndpoint() as ep: ... ep.url ...``. ``tgi=False`` hides TGI's routes; ``openai=False`` the
    OpenAI ones (/v1/models, /v1/completions; TGI's own /v1/chat/completions stays when ``tgi``)."""

    def __init__(
        self,
        answer: Callable[[str], str] = rule_based_answer,
        *,
        tgi: bool = True,
        openai: bool = True,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
        prefix: str = "",
        port: int = 0,
    ) -> None:
        """``prefix`` mounts every route under a path, as a proxy or a hosted API does (``/api``: the OpenAI API at
        ``/api/v1/...``, TGI's at ``/api/generate``)."""
        self.answer = answer
        self.tgi, self.openai, self.api_key, self.models = tgi, openai, api_key, models
        self.prefix = prefix.rstrip("/")
        self.port = port  # 0: any free one
        self.faults: deque[Fault] = deque()
        self.fault_for: Callable[[Any], Fault | None] | None = None
        self.requests: list[SeenRequest] = []
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeEndpoint:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-endpoint", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        at = self.prefix
        app.router.add_get(f"{at}/health", self._health)
        app.router.add_get(f"{at}/info", self._info)
        app.router.add_get(f"{at}/v1/models", self._models)
        app.router.add_post(f"{at}/generate", self._generate)
        app.router.add_post(f"{at}/v1/chat/completions", self._chat)
        app.router.add_post(f"{at}/v1/completions", self._completions)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeEndpoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- inspection ------------------------------------------------------------------------------------------
    def posts(self) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # --- handlers --------------------------------------------------------------------------------------------
    def _seen(self, request: web.Request, body: Any) -> None:
        with self._lock:
            self.requests.append(SeenRequest(request.method, request.path, body, dict(request.headers)))

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _health(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, None)
        return web.Response(status=200 if self.tgi else 404)

    async def _info(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, None)
        if not self.tgi:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"model_id": self.models[0], "version": "3.3.0-fake", "max_total_tokens": 4096})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._seen(request, None)
        if not self.openai:
            return web.json_response({"error": "not found"}, status=404)
        if not self._authorized(request):
            return web.json_response({"error": "bad key"}, status=401)
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def _fault(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        self._seen(request, body)
        if not self._authorized(request):
            return web.json_response({"error": "bad key", "error_type": "auth"}, status=401)
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
        if fault is None and self.fault_for is not None:
            fault = self.fault_for(body)
        if fault is None:
            return None
        if fault.kind == "malformed":
            return web.Response(status=200, text='{"generated_text": "unterminated', content_type="application/json")
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return web.json_response(
            {"error": f"fake fault {fault.status}", "error_type": "fake"}, status=fault.status, headers=headers
        )

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not self.tgi:
            return web.json_response({"error": "not found"}, status=404)
        failed = await self._fault(request, body)
        if failed is not None:
            return failed
        text = self.answer(str(body.get("inputs", "")))
        tokens = [{"id": i, "text": w, "logprob": -0.5, "special": False} for i, w in enumerate(text.split())]
        details = {"finish_reason": "eos_token", "generated_tokens": len(tokens), "prefill": [], "tokens": tokens}
        if (body.get("parameters") or {}).get("decoder_input_details"):
            words, logprobs = fake_prompt_logprobs(str(body["inputs"]))
            pairs = enumerate(zip(words, logprobs, strict=True))
            details["prefill"] = [{"id": i, "text": w, "logprob": lp} for i, (w, lp) in pairs]
        return web.json_response({"generated_text": text, "details": details})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        failed = await self._fault(request, body)
        if failed is not None:
            return failed
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        text = self.answer(users[-1] if users else "")
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 11 + len(text.split())}
        return web.json_response({"id": "fake", "object": "chat.completion", "choices": [choice], "usage": usage})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not self.openai:
            return web.json_response({"error": "not found"}, status=404)
        failed = await self._fault(request, body)
        if failed is not None:
            return failed
        prompt = str(body.get("prompt", ""))
        text = self.answer(prompt)
        choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        n_prompt = 7
        if body.get("echo") and body.get("logprobs") is not None:
            words, logprobs = fake_prompt_logprobs(prompt)
            n_prompt = len(words)
            generated = text.split()
            choice["text"] = prompt + text
            choice["logprobs"] = {"tokens": words + generated, "token_logprobs": logprobs + [-0.5] * len(generated)}
        usage = {"prompt_tokens": n_prompt, "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({"id": "fake", "object": "text_completion", "choices": [choice], "usage": usage})
