"""The clients people hold, against the embedded server: the openai SDK (chat and completions, with and without
streaming, logprobs, echo with the prompt's top alternatives, models.list) and huggingface_hub's InferenceClient
(``text_generation`` through TGI's ``POST /`` and ``/generate_stream``, with details; ``chat_completion`` with and
without streaming). What is not supported answers in TGI's error shape, never a 500."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from huggingface_hub import InferenceClient

from .conftest import ServeFactory

MESSAGES: list[Any] = [{"role": "user", "content": "Say something about the sea."}]


@pytest.fixture
def url(serve_tiny: ServeFactory) -> str:
    served, _ = serve_tiny(name="tiny")
    return served


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1 (no test downloads anything), which huggingface_hub also applies to every
    request its InferenceClient makes, loopback included: lifted for these calls to our own server only."""
    monkeypatch.setattr("huggingface_hub.constants.is_offline_mode", lambda: False)


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_sdk_chat_with_and_without_streaming_agree(url: str) -> None:
    client = _openai(url)
    (model,) = [m.id for m in client.models.list()]
    assert model == "tiny"
    whole = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length") and whole.usage is not None
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # the pieces add up to the same greedy answer
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_openai_sdk_streams_several_choices_and_token_logprobs(url: str) -> None:
    client = _openai(url)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=6,
            temperature=1.0,
            seed=3,
            n=2,
            stream=True,
            logprobs=True,
            top_logprobs=2,
        )
    )
    by_choice: dict[int, str] = {0: "", 1: ""}
    for c in chunks:
        for choice in c.choices:
            by_choice[choice.index] += choice.delta.content or ""
            if choice.logprobs is not None and choice.logprobs.content:
                assert len(choice.logprobs.content[0].top_logprobs) == 2
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, temperature=1.0, seed=3, n=2)
    assert [by_choice[0], by_choice[1]] == [c.message.content for c in whole.choices]


def test_openai_sdk_completions_streaming_logprobs_and_echo_with_prompt_alternatives(url: str) -> None:
    client = _openai(url)
    whole = client.completions.create(model="tiny", prompt="The sea is", max_tokens=8, temperature=0)
    streamed = client.completions.create(model="tiny", prompt="The sea is", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    echoed = client.completions.create(
        model="tiny", prompt="The sea is", max_tokens=2, temperature=0, echo=True, logprobs=2
    )
    choice = echoed.choices[0]
    assert choice.text.startswith("The sea is") and choice.logprobs is not None
    tops = choice.logprobs.top_logprobs or []
    n_prompt = echoed.usage.prompt_tokens if echoed.usage else 0
    assert tops[0] is None and all(t is not None and len(t) == 2 for t in tops[1:])  # prompt alternatives included
    assert len(tops) == n_prompt + 2


def test_huggingface_hub_text_generation_through_tgis_routes(url: str, hub_online: None) -> None:
    client = InferenceClient(model=url)
    text = client.text_generation("The sea is", max_new_tokens=8, do_sample=False)
    assert isinstance(text, str) and text
    details = client.text_generation("The sea is", max_new_tokens=8, do_sample=False, details=True)
    assert details.generated_text == text and details.details is not None
    assert details.details.generated_tokens == len(details.details.tokens)
    pieces = list(client.text_generation("The sea is", max_new_tokens=8, do_sample=False, stream=True))
    assert "".join(pieces) == text
    events = list(client.text_generation("The sea is", max_new_tokens=8, do_sample=False, stream=True, details=True))
    assert events[-1].generated_text == text


def test_huggingface_hub_chat_completion_with_and_without_streaming(url: str, hub_online: None) -> None:
    client = InferenceClient(base_url=f"{url}/v1")
    whole = client.chat_completion(MESSAGES, max_tokens=10, temperature=0)
    text = whole.choices[0].message.content
    assert text
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat_completion(MESSAGES, max_tokens=10, temperature=0, stream=True)
        if c.choices
    )
    assert streamed == text


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        ("/v1/chat/completions", {"messages": MESSAGES, "frequency_penalty": 1.0, "stream": True}),
        ("/v1/completions", {"prompt": "hi", "stream": True, "echo": True}),
        ("/", {"inputs": "hi", "parameters": {"repetition_penalty": 1.3}, "stream": True}),
    ],
)
def test_what_is_not_supported_is_a_422_in_tgis_shape_never_a_500(url: str, path: str, body: dict[str, Any]) -> None:
    status, error = _post(f"{url}{path}", body)
    assert status == 422 and error["error_type"] == "validation" and "not supported" in error["error"]


def test_openai_sdk_sees_a_clear_error_for_what_is_not_supported(url: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        _openai(url).chat.completions.create(model="tiny", messages=MESSAGES, frequency_penalty=1.0)
    assert "`frequency_penalty` = 1.0 is not supported" in str(caught.value.body)
