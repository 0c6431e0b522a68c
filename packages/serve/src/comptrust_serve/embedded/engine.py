"""The generation engine: a worker thread that batches concurrent requests over one causal LM (continuous batching).

Requests wait in a bounded queue (at most ``max_concurrent_requests`` queued or running; more is
:class:`~comptrust_serve.embedded.types.Overloaded`). Between two decode steps the worker admits waiting requests
up to ``max_batch`` rows: it prefills them as one left-padded group (at most ``max_prefill_tokens`` padded tokens,
and a request that wants prompt log-probabilities alone) and merges the group into the running batch. Each decode
step feeds every row its last token, picks the next ones with per-row parameters, and retires the rows that hit EOS,
a stop sequence or their ``max_new_tokens``; their futures complete at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

import torch

from comptrust_serve.embedded.batch import Batch, Row
from comptrust_serve.embedded.kvcache import new_cache
from comptrust_serve.embedded.sampling import RowChoice, pick_next
from comptrust_serve.embedded.types import GenerationFailed, GenRequest, GenResult, Overloaded, ShuttingDown

__all__ = ["Engine", "EngineConfig", "EngineStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 32
    max_concurrent_requests: int = 128
    max_prefill_tokens: int = 8192

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_concurrent_requests < 1 or self.max_prefill_tokens < 1:
            raise ValueError("max_batch, max_concurrent_requests and max_prefill_tokens must be at least 1")


@dataclass
class EngineStats:
    """Counters since start, updated by the worker thread (read them as a snapshot, not atomically)."""

    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    generated_tokens: int = 0
    steps: int = 0


class Engine:
    """Owns the model on one worker thread; :meth:`submit` is safe to call from any thread."""

    def __init__(
        self,
        model: Any,
        *,
        eos_ids: frozenset[int],
        pad_id: int,
        decode: Callable[[Sequence[int]], str],
        config: EngineConfig = EngineConfig(),
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._model = model
        self._eos_ids = eos_ids
        self._pad_id = pad_id
        self._decode = decode
        self._on_crash = on_crash
        self.config = config
        self._device = next(model.parameters()).device
        self._mergeable = new_cache(model.config)[1]
        self._cond = threading.Condition()
        self._pending: deque[GenRequest] = deque()
        self._inflight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batch_size = 0
        self.stats = EngineStats()

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def inflight(self) -> int:
        with self._cond:
            return self._inflight

    @property
    def queue_size(self) -> int:
        """Requests waiting to join the batch."""
        with self._cond:
            return len(self._pending)

    @property
    def batch_size(self) -> int:
        """Rows in the batch being decoded (a snapshot)."""
        return self._batch_size

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._thread = threading.Thread(target=self._run, name="comptrust-generate", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the worker; waiting and running requests fail with :class:`ShuttingDown`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, request: GenRequest) -> Future[GenResult]:
        """Queue ``request``; raises :class:`Overloaded` when ``max_concurrent_requests`` are already in flight."""
        with self._cond:
            if self._stopping or self._thread is None:
                raise ShuttingDown("the server is shutting down")
            if self._inflight >= self.config.max_concurrent_requests:
                raise Overloaded("Model is overloaded")
            self._inflight += 1
            request.result.add_done_callback(self._release)
            self._pending.append(request)
            self._cond.notify()
        return request.result

    def _release(self, _: Future[GenResult]) -> None:
        with self._cond:
            self._inflight -= 1

    # --- worker thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        batch: Batch | None = None
        try:
            with torch.inference_mode():
                while True:
                    new = self._take(batch)
                    if new is None:
                        break
                    try:
                        if new:
                            batch = self._admit(batch, new)
                        if batch is not None:
                            self._batch_size = batch.size
                            batch = self._step(batch)
                        self._batch_size = batch.size if batch is not None else 0
                    except Exception as exc:  # a bug of ours, not the model's: fail what is involved, keep serving
                        logger.exception("generation loop failed")
                        involved = [*new, *(row.request for row in (batch.rows if batch is not None else []))]
                        for request in involved:
                            _fail(request.result, GenerationFailed(f"Request failed during generation: {exc}"))
                        batch = None
        finally:
            with self._cond:
                self._stopping = True
                leftovers = list(self._pending)
                self._pending.clear()
            rows = batch.rows if batch is not None else []
            for request in [*leftovers, *(row.request for row in rows)]:
                _fail(request.result, ShuttingDown("the server is shutting down"))

    def _take(self, batch: Batch | None) -> list[GenRequest] | None:
        """Wait for work; return the requests to admit now (maybe none), or ``None`` when stopping."""
        with self._cond:
            while not self._stopping and not self._pending and batch is None:
                self._cond.wait()
            if self._stopping:
                return None
            if batch is not None and not self._mergeable:
                return []
            room = self.config.max_batch - (batch.size if batch is not None else 0)
            taken: list[GenRequest] = []
            longest = 0
            while self._pending and len(taken) < room:
                request = self._pending[0]
                if request.result.cancelled():
                    self._pending.popleft()
                    self.stats.cancelled += 1
                    continue
                longest_next = max(longest, len(request.prompt_ids))
                if taken and longest_next * (len(taken) + 1) > self.config.max_prefill_tokens:
                    break
                if not self._mergeable and taken and request.prefill_logprobs:
                    break
                taken.append(self._pending.popleft())
                longest = longest_next
                if not self._mergeable and request.prefill_logprobs:
                    break
            return taken

    def _admit(self, batch: Batch | None, requests: list[GenRequest]) -> Batch | None:
        alone = [[r] for r in requests if r.prefill_logprobs]
        together = [r for r in requests if not r.prefill_logprobs]
        for group in [*alone, *([together] if together else [])]:
            try:
                joined = self._prefill(group)
            except Exception as exc:
                logger.exception("prefill of %d request(s) failed", len(group))
                for request in group:
                    _fail(request.result, GenerationFailed(f"Request failed during generation: {exc}"))
                self.stats.failed += len(group)
                continue
            self._retire(joined)
            if joined.size == 0:
                continue
            if batch is None:
                batch = joined
            else:
                batch.merge(joined)
        return batch

    def _row(self, request: GenRequest) -> Row:
        sampling = request.sampling
        generator: torch.Generator | None = None
        if not sampling.greedy:
            if sampling.seed is None:
                sampling = replace(sampling, seed=secrets.randbits(63))
            assert sampling.seed is not None
            generator = torch.Generator().manual_seed(sampling.seed)
        choice = RowChoice(sampling=sampling, generator=generator, logprobs=request.logprobs, top_n=request.top_n)
        return Row(request=request, choice=choice, position=len(request.prompt_ids))

    def _prefill(self, requests: Sequence[GenRequest]) -> Batch:
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for i, request in enumerate(requests):
            n = len(request.prompt_ids)
            ids[i, width - n :] = torch.tensor(request.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        positions = (mask.cumsum(dim=-1) - 1).clamp_(min=0)
        mask = mask.to(self._device)
        cache, mergeable = new_cache(self._model.config)
        all_logits = any(r.prefill_logprobs for r in requests)
        out = self._model(
            input_ids=ids.to(self._device),
            attention_mask=mask,
            position_ids=positions.to(self._device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        rows = [self._row(r) for r in requests]
        if all_logits:
            (row,) = rows
            logp = torch.log_softmax(out.logits[0, :-1, :].float(), dim=-1)
            targets = torch.tensor(row.request.prompt_ids[1:], device=logp.device).unsqueeze(1)
            row.prefill_logprobs = (None, *logp.gather(1, targets).squeeze(1).tolist())
            if row.request.top_n > 0:  # the prompt's own alternatives (OpenAI's echo with logprobs=N, as vLLM)
                values, indices = logp.topk(row.request.top_n, dim=-1)
                tops = (tuple(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices, values, strict=True))
                row.prefill_top_tokens = (None, *tops)
        self._choose(rows, out.logits[:, -1, :])
        return Batch(rows, cache, mask, mergeable)

    def _step(self, batch: Batch) -> Batch | None:
        self.stats.steps += 1
        rows = batch.rows
        try:
            inputs = torch.tensor([[r.tokens[-1]] for r in rows], device=self._device)
            positions = torch.tensor([[r.position] for r in rows], device=self._device)
            ones = torch.ones((len(rows), 1), dtype=batch.mask.dtype, device=self._device)
            mask = torch.cat([batch.mask, ones], dim=1)
            out = self._model(
                input_ids=inputs,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=batch.cache,
                use_cache=True,
            )
            batch.mask = mask
            for row in rows:
                row.position += 1
            self._choose(rows, out.logits[:, -1, :])
        except Exception as exc:
            logger.exception("decode step over %d row(s) failed", len(rows))
            self._batch_size = 0
            for row in rows:
                _fail(row.request.result, GenerationFailed(f"Request failed during generation: {exc}"))
            self.stats.failed += len(rows)
            return None
        self._retire(batch)
        return batch if batch.size else None

    def _choose(self, rows: Sequence[Row], logits: torch.Tensor) -> None:
        picks = pick_next(logits, [r.choice for r in rows])
        for i, row in enumerate(rows):
            row.append(picks.tokens[i], picks.logprobs[i], picks.top_tokens[i], self._eos_ids, self._decode)

    def _retire(self, batch: Batch) -> None:
        """Complete finished rows, drop cancelled ones, and shrink the batch to the rest. The batch-size gauge is
        updated before any finished row's answer is released: a client that reads ``/metrics`` right after its answer
        must not see its own finished row still counted in the batch (seen under load)."""
        keep: list[int] = []
        finished: list[Row] = []
        for i, row in enumerate(batch.rows):
            if row.request.result.cancelled():
                self.stats.cancelled += 1
                continue
            if row.finish is not None:
                finished.append(row)
                continue
            keep.append(i)
        batch.keep(keep)
        self._batch_size = batch.size
        for row in finished:
            self.stats.completed += 1
            self.stats.generated_tokens += len(row.tokens)
            _complete(row.request.result, row.result())


def _complete(future: Future[GenResult], result: GenResult) -> None:
    with suppress(InvalidStateError):  # cancelled by the client meanwhile
        future.set_result(result)


def _fail(future: Future[GenResult], error: Exception) -> None:
    with suppress(InvalidStateError):
        future.set_exception(error)
