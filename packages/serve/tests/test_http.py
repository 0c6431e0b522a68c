"""The embedded server's HTTP routes: shapes against TGI's schemas, semantics, errors, limits and the bearer token."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from comptrust_serve.embedded.codec import Codec

ServeFactory = Callable[..., tuple[str, Any]]
SchemaCheck = Callable[[Any, str], None]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url: str, body: Any = None, *, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
    """``(status, parsed JSON body or None)`` of a GET (no body) or POST."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(req, timeout=60) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read(), exc.code
    return status, (json.loads(payload) if payload else None)


def generate(url: str, inputs: str, **parameters: Any) -> dict[str, Any]:
    status, body = call(f"{url}/generate", {"inputs": inputs, "parameters": parameters})
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def test_generate_with_details_matches_tgi_schema(
    serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    body = generate(url, "Hello world", max_new_tokens=6, details=True, decoder_input_details=True, top_n_tokens=2)
    tgi_schema(body, "GenerateResponse")
    details = body["details"]
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == len(details["tokens"]) == 6
    assert details["seed"] is None
    prompt_ids = Codec(loaded.tokenizer).encode("Hello world")
    assert [t["id"] for t in details["prefill"]] == prompt_ids
    assert details["prefill"][0]["logprob"] is None
    assert all(isinstance(t["logprob"], float) for t in details["prefill"][1:] + details["tokens"])
    assert [len(step) for step in details["top_tokens"]] == [2] * 6
    assert body["generated_text"] == Codec(loaded.tokenizer).decode([t["id"] for t in details["tokens"]])


def test_generate_without_details_and_with_full_text(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny()
    plain = generate(url, "Hello world", max_new_tokens=5)
    assert set(plain) == {"generated_text"}
    full = generate(url, "Hello world", max_new_tokens=5, return_full_text=True)
    assert full["generated_text"] == "Hello world" + plain["generated_text"]
    tgi_schema(plain, "GenerateResponse")


def test_generate_greedy_is_deterministic_and_temperature_zero_is_greedy(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny()
    texts = {generate(url, "The quick brown", max_new_tokens=12)["generated_text"] for _ in range(2)}
    texts.add(generate(url, "The quick brown", max_new_tokens=12, temperature=0.0, do_sample=True)["generated_text"])
    texts.add(generate(url, "The quick brown", max_new_tokens=12, temperature=1.0, do_sample=False)["generated_text"])
    assert len(texts) == 1


def test_generate_seeded_sampling_reports_and_reproduces(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny()
    params = {"max_new_tokens": 16, "do_sample": True, "temperature": 0.9, "top_p": 0.95, "seed": 42, "details": True}
    first, second = generate(url, "Once", **params), generate(url, "Once", **params)
    assert first == second
    assert first["details"]["seed"] == 42
    unseeded = generate(url, "Once", **{**params, "seed": None})
    assert isinstance(unseeded["details"]["seed"], int)


def test_stop_sequences_tgi_keeps_them_openai_trims_them(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny()
    text = generate(url, "Hello world", max_new_tokens=30)["generated_text"]
    stop = text[8:11]
    assert stop.strip()
    stopped = generate(url, "Hello world", max_new_tokens=30, stop=[stop], details=True)
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert text.startswith(stopped["generated_text"])
    assert stop in stopped["generated_text"]
    status, completion = call(
        f"{url}/v1/completions", {"prompt": "Hello world", "max_tokens": 30, "temperature": 0, "stop": stop}
    )
    assert status == 200
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == text[: text.index(stop)]


def test_health_and_info(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny(max_batch=4, max_concurrent_requests=9)
    assert call(f"{url}/health")[0] == 200
    status, info = call(f"{url}/info")
    assert status == 200
    tgi_schema(info, "Info")
    assert info["model_id"] == "tiny"
    assert info["max_concurrent_requests"] == 9
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (255, 256)


def test_chat_completion_applies_the_chat_template(
    serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]
    defaults = {"n": 1, "stream": False, "tools": [], "presence_penalty": 0, "frequency_penalty": 0.0, "stop": None}
    request = {"messages": messages, "max_tokens": 8, "temperature": 0, "model": "anything", **defaults}
    status, body = call(f"{url}/v1/chat/completions", request)
    assert status == 200, body
    tgi_schema(body, "ChatCompletion")
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("length", "stop")
    codec = Codec(loaded.tokenizer)
    rendered = codec.render_chat(messages)
    assert rendered.endswith("<|im_start|>assistant\n")
    prompt_ids = codec.encode(rendered, add_special_tokens=False)
    assert body["usage"]["prompt_tokens"] == len(prompt_ids)
    assert body["usage"]["total_tokens"] == len(prompt_ids) + body["usage"]["completion_tokens"]
    assert choice["message"]["content"] == generate(url, rendered, max_new_tokens=8)["generated_text"]


def test_chat_n_choices_logprobs_and_seeds(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny()
    request = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 6,
        "temperature": 1.0,
        "seed": 7,
        "n": 3,
        "logprobs": True,
        "top_logprobs": 2,
    }
    status, body = call(f"{url}/v1/chat/completions", request)
    assert status == 200, body
    tgi_schema(body, "ChatCompletion")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == sum(len(c["logprobs"]["content"]) for c in body["choices"])
    assert all(len(t["top_logprobs"]) == 2 for c in body["choices"] for t in c["logprobs"]["content"])
    again = call(f"{url}/v1/chat/completions", request)[1]
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in body["choices"]]
    single = call(f"{url}/v1/chat/completions", {**request, "n": 1, "seed": 8})[1]
    assert single["choices"][0]["message"] == body["choices"][1]["message"]  # choice i is seeded with seed + i


def test_completions_and_models(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny()
    status, body = call(f"{url}/v1/completions", {"prompt": ["Hello", "Once"], "max_tokens": 4, "temperature": 0})
    assert status == 200, body
    tgi_schema(body, "CompletionFinal")
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["text"] == generate(url, "Hello", max_new_tokens=4)["generated_text"]
    status, models = call(f"{url}/v1/models")
    assert status == 200 and models["object"] == "list"
    tgi_schema(models["data"][0], "ModelInfo")
    assert models["data"][0]["id"] == "tiny"


def test_completions_echo_returns_the_prompt_logprobs_of_generate(serve_tiny: ServeFactory, loaded: Any) -> None:
    url, _ = serve_tiny()
    prompt = "The quick brown fox"
    request = {"prompt": prompt, "max_tokens": 2, "temperature": 0, "echo": True, "logprobs": 0}
    status, body = call(f"{url}/v1/completions", request)
    assert status == 200, body
    choice = body["choices"][0]
    tgi = generate(url, prompt, max_new_tokens=2, details=True, decoder_input_details=True)["details"]
    n_prompt = len(Codec(loaded.tokenizer).encode(prompt))
    assert body["usage"]["prompt_tokens"] == n_prompt == len(tgi["prefill"])
    assert choice["text"] == prompt + generate(url, prompt, max_new_tokens=2)["generated_text"]
    lps = choice["logprobs"]["token_logprobs"]
    assert len(lps) == len(choice["logprobs"]["tokens"]) == n_prompt + 2
    assert lps[0] is None
    assert lps[1:n_prompt] == pytest.approx([t["logprob"] for t in tgi["prefill"][1:]], abs=1e-5)
    assert lps[n_prompt:] == pytest.approx([t["logprob"] for t in tgi["tokens"]], abs=1e-5)
    status, plain = call(f"{url}/v1/completions", {**request, "logprobs": None})
    assert status == 200 and plain["choices"][0]["logprobs"] is None and plain["choices"][0]["text"] == choice["text"]
    status, top = call(f"{url}/v1/completions", {**request, "logprobs": 2})
    assert status == 200, top
    tops = top["choices"][0]["logprobs"]["top_logprobs"]
    # the prompt's own alternatives, as vLLM gives them: none before the first token, then the 2 most likely, which
    # are at least as likely as the token the prompt holds there
    assert len(tops) == n_prompt + 2 and tops[0] is None
    assert all(len(t) == 2 for t in tops[1:])
    lps2 = top["choices"][0]["logprobs"]["token_logprobs"]
    assert all(max(t.values()) >= lp - 1e-5 for t, lp in zip(tops[1:n_prompt], lps2[1:n_prompt], strict=True))
    chat_echo = {"messages": [{"role": "user", "content": "hi"}], "echo": True}
    assert call(f"{url}/v1/chat/completions", chat_echo)[0] == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"parameters": {}}),
        ("/generate", {"inputs": ""}),
        ("/generate", {"inputs": 3}),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 0}}),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 1000}}),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": "ten"}}),
        ("/generate", {"inputs": "hi", "parameters": {"temperature": -1}}),
        ("/generate", {"inputs": "hi", "parameters": {"top_p": 1.5}}),
        ("/generate", {"inputs": "hi", "parameters": {"top_k": 0}}),
        ("/generate", {"inputs": "hi", "parameters": {"seed": -4}}),
        ("/generate", {"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}),
        ("/generate", {"inputs": "hi", "parameters": {"stop": "a"}}),
        ("/generate", {"inputs": "hi", "parameters": {"best_of": 2}}),
        ("/generate", {"inputs": "hi", "parameters": {"repetition_penalty": 1.2}}),
        ("/generate", {"inputs": "hi", "parameters": {"top_n_tokens": 9}}),
        ("/generate", {"inputs": "hi", "stream": True}),
        ("/generate", {"inputs": "hi " * 300}),
        ("/generate", ["not", "an", "object"]),
        ("/v1/chat/completions", {"messages": []}),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"x": 1}}),
        ("/v1/completions", {"prompt": "hi", "stream": True, "logprobs": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 0}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 8}),
        ("/v1/completions", {"prompt": ""}),
        ("/v1/completions", {"prompt": "hi", "frequency_penalty": 0.5}),
    ],
)
def test_invalid_requests_get_422_in_tgi_error_shape(
    serve_tiny: ServeFactory, path: str, body: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    status, error = call(f"{url}{path}", body)
    assert status == 422, error
    tgi_schema(error, "ErrorResponse")
    assert error["error_type"] == "validation" and error["error"]


def test_malformed_json_and_unknown_routes_answer_in_error_shape(
    serve_tiny: ServeFactory, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    status, error = call(f"{url}/generate", raw=b"{not json")
    assert status == 400
    tgi_schema(error, "ErrorResponse")
    status, error = call(f"{url}/nowhere")
    assert status == 404
    tgi_schema(error, "ErrorResponse")


def test_full_queue_answers_429(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, engine = serve_tiny(max_batch=1, max_concurrent_requests=1)

    async def scenario() -> tuple[int, dict[str, Any], int]:
        async with aiohttp.ClientSession() as session:
            long = asyncio.ensure_future(
                session.post(f"{url}/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 250}})
            )
            deadline = time.monotonic() + 10
            while engine.inflight == 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (the engine is a thread)
                await asyncio.sleep(0.001)
            async with session.post(f"{url}/generate", json={"inputs": "Hi", "parameters": {}}) as response:
                rejected, body = response.status, await response.json()
            first = await long
            status = first.status
            first.release()
            return rejected, body, status

    rejected, body, first_status = asyncio.run(scenario())
    assert rejected == 429
    tgi_schema(body, "ErrorResponse")
    assert body["error_type"] == "overloaded"
    assert first_status == 200


def test_a_client_that_hangs_up_frees_its_row(serve_tiny: ServeFactory) -> None:
    url, engine = serve_tiny(max_batch=1)

    async def hang_up() -> None:
        async with aiohttp.ClientSession() as session:
            body = {"inputs": "Hello", "parameters": {"max_new_tokens": 250}}
            task = asyncio.ensure_future(session.post(f"{url}/generate", json=body))
            deadline = time.monotonic() + 10
            while engine.inflight == 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (the engine is a thread)
                await asyncio.sleep(0.001)
            task.cancel()

    asyncio.run(hang_up())
    deadline = time.monotonic() + 10
    while (engine.inflight or not engine.stats.cancelled) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.inflight == 0
    assert engine.stats.cancelled == 1 and engine.stats.completed == 0


def test_concurrent_http_requests_match_sequential_ones(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny(max_batch=4)
    prompts = [f"{word} the quick brown fox" * (i % 3 + 1) for i, word in enumerate("abcdefgh")]
    sequential = [generate(url, p, max_new_tokens=10 + i)["generated_text"] for i, p in enumerate(prompts)]

    async def together() -> list[str]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int, prompt: str) -> str:
                body = {"inputs": prompt, "parameters": {"max_new_tokens": 10 + i}}
                async with session.post(f"{url}/generate", json=body) as response:
                    assert response.status == 200
                    text: str = (await response.json())["generated_text"]
                    return text

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    assert asyncio.run(together()) == sequential


def test_bearer_token_guards_every_route_but_health(serve_tiny: ServeFactory, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny(api_key="s3cret")
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
    assert call(f"{url}/health")[0] == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, error = call(f"{url}/generate", body, headers=headers)
        assert status == 401
        tgi_schema(error, "ErrorResponse")
        assert "s3cret" not in error["error"]
    assert call(f"{url}/info")[0] == 401
    assert call(f"{url}/generate", body, headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_the_schema_check_catches_violations(tgi_schema: SchemaCheck) -> None:
    tgi_schema({"generated_text": "x", "details": None}, "GenerateResponse")
    for bad in ({}, {"generated_text": 3}, {"generated_text": "x", "details": {"finish_reason": "done"}}):
        with pytest.raises(AssertionError):
            tgi_schema(bad, "GenerateResponse")
