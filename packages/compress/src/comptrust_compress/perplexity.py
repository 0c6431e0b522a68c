"""Perplexity of a causal LM on a text: exp of the mean next-token negative log-likelihood, in fixed windows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from comptrust_core import ConfigError

__all__ = ["DEFAULT_WINDOW", "Perplexity", "perplexity"]

DEFAULT_WINDOW = 512


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int
    """Tokens of the text that were fed to the model."""


def perplexity(
    model: Any, tokenizer: Any, text: str, *, max_tokens: int | None = None, window: int = DEFAULT_WINDOW
) -> Perplexity:
    """Perplexity over the first ``max_tokens`` tokens of ``text`` (all when None), cut into non-overlapping windows.

    Each window is scored on its own (no context carried over); every token but the first of a window is predicted.
    """
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if isinstance(limit, int):
        window = min(window, limit)
    if len(ids) < 2:
        raise ConfigError("the perplexity text is shorter than two tokens; pass a larger --ppl-tokens")
    device = next(model.parameters()).device
    total_nll = 0.0
    predicted = 0
    with torch.inference_mode():
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window]
            if len(chunk) < 2:
                continue
            input_ids = torch.tensor([chunk], dtype=torch.long, device=device)
            logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1].float()
            total_nll += float(F.cross_entropy(logits, input_ids[0, 1:], reduction="sum"))
            predicted += len(chunk) - 1
    return Perplexity(value=math.exp(total_nll / predicted), tokens=len(ids))
