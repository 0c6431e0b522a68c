"""Choosing the next token of every row of a batch, each row with its own sampling parameters and random stream.

Greedy rows take the argmax. Sampling rows divide by their temperature, keep their top-k and top-p tokens, and draw
one uniform number from their own seeded :class:`torch.Generator` per step, so a seeded request gives the same tokens
whatever else shares its batch. Log-probabilities are the model's own (before temperature, top-k and top-p).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from comptrust_serve.embedded.types import Sampling

__all__ = ["Picks", "RowChoice", "pick_next"]


@dataclass(frozen=True)
class RowChoice:
    """What one row needs from :func:`pick_next`."""

    sampling: Sampling
    generator: torch.Generator | None
    logprobs: bool = False
    top_n: int = 0


@dataclass(frozen=True)
class Picks:
    tokens: list[int]
    logprobs: list[float | None]
    top_tokens: list[tuple[tuple[int, float], ...] | None]


def _sample(logits: torch.Tensor, rows: Sequence[RowChoice]) -> torch.Tensor:
    """Draw one token per row of ``logits`` (already restricted to the sampling rows)."""
    vocab = logits.shape[-1]
    device = logits.device
    temps = torch.tensor([r.sampling.temperature for r in rows], dtype=logits.dtype, device=device)
    scaled = logits / temps.unsqueeze(1)
    order: torch.Tensor | None = None
    if any(r.sampling.top_k is not None or r.sampling.top_p is not None for r in rows):
        scaled, order = scaled.sort(dim=-1, descending=True)
        ks = torch.tensor([r.sampling.top_k or vocab for r in rows], device=device)
        ranks = torch.arange(vocab, device=device)
        scaled = scaled.masked_fill(ranks.unsqueeze(0) >= ks.unsqueeze(1), float("-inf"))
        probs = torch.softmax(scaled, dim=-1, dtype=torch.float64)
        ps = torch.tensor([r.sampling.top_p or 1.0 for r in rows], dtype=torch.float64, device=device)
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= ps.unsqueeze(1), 0.0)
    else:
        probs = torch.softmax(scaled, dim=-1, dtype=torch.float64)
    cdf = probs.cumsum(dim=-1)
    draws = [torch.rand(1, generator=r.generator, dtype=torch.float64).item() for r in rows]
    targets = torch.tensor(draws, dtype=torch.float64, device=device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, targets.unsqueeze(1), right=True).clamp_(max=vocab - 1)
    if order is not None:
        picked = order.gather(1, picked)
    return picked.squeeze(1)


def pick_next(logits: torch.Tensor, rows: Sequence[RowChoice]) -> Picks:
    """Choose a token for each row of ``logits`` (shape ``[rows, vocab]``), with log-probabilities where asked."""
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, r in enumerate(rows) if not r.sampling.greedy]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        tokens[index] = _sample(logits.index_select(0, index), [rows[i] for i in sampled])
    token_list: list[int] = tokens.tolist()
    logprobs: list[float | None] = [None] * len(rows)
    tops: list[tuple[tuple[int, float], ...] | None] = [None] * len(rows)
    wanted = [i for i, r in enumerate(rows) if r.logprobs or r.top_n > 0]
    if wanted:
        index = torch.tensor(wanted, device=logits.device)
        logp = torch.log_softmax(logits.index_select(0, index), dim=-1)
        chosen = logp.gather(1, tokens.index_select(0, index).unsqueeze(1)).squeeze(1).tolist()
        n_max = max(rows[i].top_n for i in wanted)
        top_vals, top_ids = logp.topk(n_max, dim=-1) if n_max > 0 else (None, None)
        for j, i in enumerate(wanted):
            logprobs[i] = chosen[j]
            if top_vals is not None and top_ids is not None and rows[i].top_n > 0:
                n = rows[i].top_n
                tops[i] = tuple(zip(top_ids[j, :n].tolist(), top_vals[j, :n].tolist(), strict=True))
    return Picks(tokens=token_list, logprobs=logprobs, top_tokens=tops)
