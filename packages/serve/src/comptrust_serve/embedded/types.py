"""What the HTTP layer hands the generation engine, what it gets back, and the errors between them.

Nothing here imports torch: the protocol modules build :class:`GenRequest` objects, the engine fills
:class:`GenResult` objects, and both sides share the small error hierarchy that the app maps to HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FinishReason",
    "GenRequest",
    "GenResult",
    "GenerationFailed",
    "InvalidRequest",
    "Limits",
    "Overloaded",
    "Sampling",
    "ServerError",
    "ShuttingDown",
    "TokenCallback",
]

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class ServerError(Exception):
    """Base of the errors the app turns into TGI's ``{"error", "error_type"}`` response."""

    status: int = 500
    error_type: str = "internal"


class InvalidRequest(ServerError):
    """The request's body or parameters are invalid: HTTP 422, as TGI answers."""

    status = 422
    error_type = "validation"


class Overloaded(ServerError):
    """Too many requests in flight: HTTP 429, as TGI answers."""

    status = 429
    error_type = "overloaded"


class GenerationFailed(ServerError):
    """The model raised while generating: HTTP 424, as TGI answers."""

    status = 424
    error_type = "generation"


class ShuttingDown(ServerError):
    """The server is stopping and will not finish this request."""

    status = 503
    error_type = "unhealthy"


@dataclass(frozen=True)
class Limits:
    """The server's request limits, reported by ``/info`` and enforced by the protocol parsers."""

    max_input_tokens: int
    max_total_tokens: int
    max_new_tokens: int = 1024
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_choices: int = 16


@dataclass(frozen=True)
class Sampling:
    """How to pick the next token. ``greedy`` ignores the rest; otherwise sample with ``seed``."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


# Called by the worker thread with each new token: (id, log-probability or None, top tokens or None).
TokenCallback = Callable[[int, float | None, tuple[tuple[int, float], ...] | None], None]


@dataclass(eq=False)
class GenRequest:
    """One sequence to generate. ``result`` is completed by the engine's worker thread; ``on_token`` (for streaming)
    is called by that thread with every token as it is chosen, before ``result`` completes."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_n: int = 0
    prefill_logprobs: bool = False
    on_token: TokenCallback | None = None
    result: Future[GenResult] = field(default_factory=Future)


@dataclass(frozen=True)
class GenResult:
    """A finished sequence: generated token ids (EOS included when it ended the sequence) and what was asked for.

    ``logprobs`` are the model's own log-probabilities (before temperature, top-k or top-p) of the chosen tokens;
    ``top_tokens`` holds, per step, the ``top_n`` most likely ``(id, logprob)`` pairs; ``prefill_logprobs`` holds
    one entry per prompt token, ``None`` for the first, and ``prefill_top_tokens`` (with ``top_n``) the ``top_n``
    most likely ``(id, logprob)`` pairs at each prompt position, ``None`` for the first.
    """

    prompt_tokens: int
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    seed: int | None = None
    stop_sequence: str | None = None
    logprobs: tuple[float, ...] | None = None
    top_tokens: tuple[tuple[tuple[int, float], ...], ...] | None = None
    prefill_logprobs: tuple[float | None, ...] | None = None
    prefill_top_tokens: tuple[tuple[tuple[int, float], ...] | None, ...] | None = None
