"""TGI's /generate_stream (server-sent events), /tokenize and /metrics, and OpenAI completions' echo, on the
embedded server, with responses checked against TGI's schemas."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
from comptrust_serve.embedded.codec import Codec

ServeFactory = Callable[..., tuple[str, Any]]
SchemaCheck = Callable[[Any, str], None]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: Any) -> tuple[int, str, bytes]:
    """``(status, content type, raw body)`` of a JSON POST."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=60) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def stream(url: str, inputs: str, **parameters: Any) -> list[dict[str, Any]]:
    status, kind, raw = post(f"{url}/generate_stream", {"inputs": inputs, "parameters": parameters})
    assert status == 200 and kind.startswith("text/event-stream"), raw
    chunks = raw.decode().split("\n\n")
    assert chunks[-1] == ""  # every event ends with a blank line
    assert all(chunk.startswith("data:") for chunk in chunks[:-1])
    return [json.loads(chunk.removeprefix("data:")) for chunk in chunks[:-1]]


def generate(url: str, inputs: str, **parameters: Any) -> dict[str, Any]:
    status, _, raw = post(f"{url}/generate", {"inputs": inputs, "parameters": parameters})
    assert status == 200, raw
    body: dict[str, Any] = json.loads(raw)
    return body


def test_generate_stream_sends_one_event_per_token_then_the_text(
    serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    events = stream(url, "Hello world", max_new_tokens=7, details=True)
    for event in events:
        tgi_schema(event, "StreamResponse")
    reference = generate(url, "Hello world", max_new_tokens=7, details=True)
    assert [e["token"]["id"] for e in events] == [t["id"] for t in reference["details"]["tokens"]]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    assert all(isinstance(e["token"]["logprob"], float) for e in events)
    last = events[-1]
    assert last["generated_text"] == reference["generated_text"]
    assert last["details"]["finish_reason"] == "length" and last["details"]["generated_tokens"] == 7
    assert last["details"]["input_length"] == len(Codec(loaded.tokenizer).encode("Hello world"))
    assert last["details"]["seed"] is None


def test_generate_stream_options_and_errors(serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck) -> None:
    url, _ = serve_tiny()
    codec = Codec(loaded.tokenizer)
    plain = stream(url, "Once", max_new_tokens=4, return_full_text=True, top_n_tokens=2)
    assert plain[-1]["details"] is None  # no details unless asked, as TGI
    assert plain[-1]["generated_text"] == "Once" + generate(url, "Once", max_new_tokens=4)["generated_text"]
    assert [len(e["top_tokens"]) for e in plain] == [2] * 4
    seeded = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.8, "seed": 5, "details": True}
    events = stream(url, "Once", **seeded)
    assert events[-1]["details"]["seed"] == 5
    assert events[-1]["generated_text"] == generate(url, "Once", **seeded)["generated_text"]
    assert codec.decode([e["token"]["id"] for e in events]) == events[-1]["generated_text"]
    status, kind, raw = post(f"{url}/generate_stream", {"inputs": "hi", "parameters": {"top_p": 2}})
    assert status == 422 and kind.startswith("application/json")
    tgi_schema(json.loads(raw), "ErrorResponse")


def test_tokenize_matches_the_tokenizer_with_offsets(
    serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    text = "Hello world! The quick brown fox."
    status, _, raw = post(f"{url}/tokenize", {"inputs": text})
    assert status == 200
    tokens = json.loads(raw)
    tgi_schema(tokens, "TokenizeResponse")
    assert [t["id"] for t in tokens] == Codec(loaded.tokenizer).encode(text)
    assert all(t["text"] == text[t["start"] : t["stop"]] for t in tokens)
    assert "".join(t["text"] for t in tokens) == text
    status, _, raw = post(f"{url}/tokenize", {"inputs": ""})
    assert status == 422


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


def test_metrics_count_requests_failures_tokens_and_latency(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny()
    generate(url, "Hello", max_new_tokens=5)
    stream(url, "Hello", max_new_tokens=3)
    post(f"{url}/generate", {"inputs": "Hello", "parameters": {"top_k": 0}})
    post(f"{url}/v1/completions", {"prompt": ["a", "b"], "max_tokens": 2, "temperature": 0})
    post(f"{url}/tokenize", {"inputs": "not counted"})
    with _OPENER.open(f"{url}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    assert metric(text, "tgi_request_count") == 4
    assert metric(text, "tgi_request_success") == 3
    assert metric(text, 'tgi_request_failure{err="validation"}') == 1
    assert metric(text, "tgi_request_generated_tokens_total") == 5 + 3 + 2 + 2
    assert metric(text, "tgi_request_generated_tokens_count") == 4  # sequences
    assert metric(text, 'tgi_request_generated_tokens_bucket{le="2"}') == 2
    assert metric(text, 'tgi_request_generated_tokens_bucket{le="+Inf"}') == 4
    assert metric(text, "tgi_request_duration_count") == 4
    assert metric(text, "tgi_request_duration_sum") > 0
    assert metric(text, "tgi_queue_size") == 0 and metric(text, "tgi_batch_current_size") == 0
    assert "# TYPE tgi_request_duration histogram" in text and "# TYPE tgi_queue_size gauge" in text


def test_completions_echo_the_prompt_with_its_logprobs(
    serve_tiny: ServeFactory, loaded: Any, tgi_schema: SchemaCheck
) -> None:
    url, _ = serve_tiny()
    prompt = "Hello world"
    body = {"prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": True, "n": 2}
    status, _, raw = post(f"{url}/v1/completions", body)
    assert status == 200
    plain = json.loads(raw)
    tgi_schema(plain, "CompletionFinal")
    generated = generate(url, prompt, max_new_tokens=4, details=True, decoder_input_details=True)
    assert [c["text"] for c in plain["choices"]] == [prompt + generated["generated_text"]] * 2
    status, _, raw = post(f"{url}/v1/completions", {**body, "n": 1, "logprobs": 1})
    logprobs = json.loads(raw)["choices"][0]["logprobs"]
    prompt_ids = Codec(loaded.tokenizer).encode(prompt)
    assert len(logprobs["tokens"]) == len(prompt_ids) + 4
    assert logprobs["token_logprobs"][0] is None
    expected = [t["logprob"] for t in generated["details"]["prefill"]] + [
        t["logprob"] for t in generated["details"]["tokens"]
    ]
    assert logprobs["token_logprobs"][1:] == expected[1:]
    assert logprobs["top_logprobs"][0] is None  # nothing comes before the first prompt token
    assert all(len(top) == 1 for top in logprobs["top_logprobs"][1 : len(prompt_ids)])  # then its alternatives
    assert all(len(top) == 1 for top in logprobs["top_logprobs"][len(prompt_ids) :])
    status, _, raw = post(f"{url}/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "echo": True})
    assert status == 422


def test_generate_top_k_one_is_greedy_and_sampling_parameters_change_the_text(serve_tiny: ServeFactory) -> None:
    url, _ = serve_tiny()
    greedy = generate(url, "The quick", max_new_tokens=12)["generated_text"]
    assert generate(url, "The quick", max_new_tokens=12, do_sample=True, top_k=1, seed=3)["generated_text"] == greedy
    hot = {"max_new_tokens": 12, "do_sample": True, "temperature": 5.0, "top_p": 1.0}
    samples = {generate(url, "The quick", seed=s, **hot)["generated_text"] for s in range(4)}
    assert len(samples) > 1


def test_a_stream_client_that_hangs_up_frees_its_row(serve_tiny: ServeFactory) -> None:
    url, engine = serve_tiny(max_batch=1)

    async def read_two_events_then_leave() -> int:
        async with aiohttp.ClientSession() as session:
            body = {"inputs": "Hello", "parameters": {"max_new_tokens": 250}}
            async with session.post(f"{url}/generate_stream", json=body) as response:
                assert response.status == 200
                seen = 0
                async for line in response.content:
                    seen += line.startswith(b"data:")
                    if seen == 2:
                        break
                return seen

    assert asyncio.run(read_two_events_then_leave()) == 2
    deadline = time.monotonic() + 10
    while (engine.inflight or not engine.stats.cancelled) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.inflight == 0
    assert engine.stats.cancelled == 1 and engine.stats.completed == 0
