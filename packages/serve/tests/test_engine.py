"""The generation engine on the tiny model: greedy and sampled decoding, batching, stops, limits, cancellation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from comptrust_serve.embedded.codec import Codec
from comptrust_serve.embedded.engine import Engine, EngineConfig
from comptrust_serve.embedded.types import GenRequest, GenResult, Overloaded, Sampling, ShuttingDown

PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over",
    "Once",
    "Trust, safety, fairness and privacy matter in language models. one two three",
    "Compression can change",
    "How are you today?",
]


def make_engine(loaded: Any, eos: frozenset[int] | None = None, **config: int) -> Engine:
    engine = Engine(
        loaded.model,
        eos_ids=eos if eos is not None else loaded.eos_ids,
        pad_id=loaded.pad_id,
        decode=Codec(loaded.tokenizer).decode,
        config=EngineConfig(**config),
    )
    engine.start()
    return engine


@pytest.fixture
def engine(loaded: Any) -> Iterator[Engine]:
    eng = make_engine(loaded, max_batch=8)
    yield eng
    eng.stop()


def request(loaded: Any, prompt: str, n: int = 16, **kw: Any) -> GenRequest:
    return GenRequest(prompt_ids=Codec(loaded.tokenizer).encode(prompt), max_new_tokens=n, **kw)


def run(engine: Engine, req: GenRequest) -> GenResult:
    return engine.submit(req).result(timeout=60)


def hf_greedy(loaded: Any, prompt: str, n: int) -> list[int]:
    ids = Codec(loaded.tokenizer).encode(prompt)
    with torch.inference_mode():
        out = loaded.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
        )
    tokens: list[int] = out[0, len(ids) :].tolist()
    return tokens


def test_greedy_matches_transformers_generate(engine: Engine, loaded: Any) -> None:
    for prompt in PROMPTS[:3]:
        result = run(engine, request(loaded, prompt, 20))
        assert list(result.token_ids) == hf_greedy(loaded, prompt, 20)[: len(result.token_ids)]
        assert result.seed is None


def test_greedy_is_deterministic(engine: Engine, loaded: Any) -> None:
    first = run(engine, request(loaded, PROMPTS[1], 24))
    second = run(engine, request(loaded, PROMPTS[1], 24))
    assert first == second


def test_concurrent_batches_give_the_one_at_a_time_outputs(loaded: Any) -> None:
    # max_batch 3 with 6 requests of different lengths: rows queue, join running batches, and leave them early.
    engine = make_engine(loaded, max_batch=3)
    try:
        lengths = [5, 30, 12, 40, 3, 25]
        alone = [run(engine, request(loaded, p, n)).token_ids for p, n in zip(PROMPTS, lengths, strict=True)]
        futures = []
        for p, n in zip(PROMPTS, lengths, strict=True):
            futures.append(engine.submit(request(loaded, p, n)))
            time.sleep(0.002)
        together = [f.result(timeout=60).token_ids for f in futures]
    finally:
        engine.stop()
    assert together == alone


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(engine: Engine, loaded: Any) -> None:
    sampling = Sampling(greedy=False, temperature=1.0, seed=1234)
    alone = run(engine, request(loaded, PROMPTS[0], 24, sampling=sampling))
    again = run(engine, request(loaded, PROMPTS[0], 24, sampling=sampling))
    others = [engine.submit(request(loaded, p, 24, sampling=Sampling(greedy=False))) for p in PROMPTS[1:4]]
    batched = engine.submit(request(loaded, PROMPTS[0], 24, sampling=sampling))
    assert alone.token_ids == again.token_ids == batched.result(timeout=60).token_ids
    assert alone.seed == 1234
    for future in others:
        future.result(timeout=60)
    other_seed = run(engine, request(loaded, PROMPTS[0], 24, sampling=Sampling(greedy=False, seed=99)))
    assert other_seed.token_ids != alone.token_ids


def test_unseeded_sampling_reports_a_seed_that_replays_it(engine: Engine, loaded: Any) -> None:
    first = run(engine, request(loaded, PROMPTS[2], 16, sampling=Sampling(greedy=False, temperature=0.8)))
    assert first.seed is not None
    replay = Sampling(greedy=False, temperature=0.8, seed=first.seed)
    assert run(engine, request(loaded, PROMPTS[2], 16, sampling=replay)).token_ids == first.token_ids


@pytest.mark.parametrize(
    "sampling", [Sampling(greedy=False, top_k=1, seed=3), Sampling(greedy=False, top_p=1e-6, seed=3)]
)
def test_top_k_1_and_tiny_top_p_reduce_to_greedy(engine: Engine, loaded: Any, sampling: Sampling) -> None:
    greedy = run(engine, request(loaded, PROMPTS[3], 16))
    assert run(engine, request(loaded, PROMPTS[3], 16, sampling=sampling)).token_ids == greedy.token_ids


def test_max_new_tokens_bounds_the_output(engine: Engine, loaded: Any) -> None:
    for n in (1, 7):
        result = run(engine, request(loaded, PROMPTS[0], n))
        assert len(result.token_ids) == n
        assert result.finish_reason == "length"


def test_eos_ends_a_row_and_is_reported(loaded: Any) -> None:
    greedy = hf_greedy(loaded, PROMPTS[1], 10)
    stop_token = greedy[3]
    cut = greedy.index(stop_token) + 1
    engine = make_engine(loaded, eos=frozenset({stop_token}), max_batch=4)
    try:
        result = run(engine, request(loaded, PROMPTS[1], 10))
    finally:
        engine.stop()
    assert result.finish_reason == "eos_token"
    assert list(result.token_ids) == greedy[:cut]


def test_stop_sequence_ends_a_row_at_the_token_completing_it(engine: Engine, loaded: Any) -> None:
    codec = Codec(loaded.tokenizer)
    full = run(engine, request(loaded, PROMPTS[0], 30)).token_ids
    text = codec.decode(full)
    stop = text[len(codec.decode(full[:6])) :][:3]
    assert stop.strip(), f"the generated text {text!r} offers no stop sequence"
    result = run(engine, request(loaded, PROMPTS[0], 30, stop=(stop, "never-generated")))
    assert result.finish_reason == "stop_sequence"
    assert result.stop_sequence == stop
    assert full[: len(result.token_ids)] == result.token_ids
    assert stop in codec.decode(result.token_ids)
    assert stop not in codec.decode(result.token_ids[:-1])


def test_logprobs_and_prefill_logprobs_match_a_plain_forward_pass(engine: Engine, loaded: Any) -> None:
    req = request(loaded, PROMPTS[1], 4, logprobs=True, top_n=3, prefill_logprobs=True)
    result = run(engine, req)
    ids = req.prompt_ids + list(result.token_ids)
    with torch.inference_mode():
        logp = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert result.prefill_logprobs is not None and result.logprobs is not None and result.top_tokens is not None
    assert result.prefill_logprobs[0] is None
    got = [*result.prefill_logprobs[1:], *result.logprobs]
    assert got == pytest.approx(expected, abs=1e-4)
    for step, token in zip(result.top_tokens, result.token_ids, strict=True):
        assert len(step) == 3 and step[0][0] == token  # greedy: the chosen token is the most likely one


def test_queue_bound_raises_overloaded_then_recovers(loaded: Any) -> None:
    engine = make_engine(loaded, max_batch=1, max_concurrent_requests=2)
    try:
        running = [engine.submit(request(loaded, PROMPTS[0], 200)) for _ in range(2)]
        with pytest.raises(Overloaded):
            engine.submit(request(loaded, PROMPTS[0], 2))
        for future in running:
            future.result(timeout=60)
        assert engine.inflight == 0
        assert len(run(engine, request(loaded, PROMPTS[0], 2)).token_ids) == 2
    finally:
        engine.stop()


def test_cancelled_requests_leave_the_batch(engine: Engine, loaded: Any) -> None:
    future = engine.submit(request(loaded, PROMPTS[0], 240))
    assert future.cancel()
    deadline = time.monotonic() + 10
    while engine.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.inflight == 0
    assert len(run(engine, request(loaded, PROMPTS[0], 3)).token_ids) == 3


def test_stop_fails_waiting_and_running_requests(loaded: Any) -> None:
    engine = make_engine(loaded, max_batch=1)
    futures = [engine.submit(request(loaded, PROMPTS[0], 240)) for _ in range(3)]
    engine.stop()
    for future in futures:
        if future.exception(timeout=10) is not None:
            assert isinstance(future.exception(), ShuttingDown)
    assert not engine.healthy
    with pytest.raises(ShuttingDown):
        engine.submit(request(loaded, PROMPTS[0], 2))
