"""The running batch: one :class:`Row` per sequence, their shared KV cache, and the left-padded attention mask.

Rows are left-padded so that every row's newest token sits in the last column. A row that finishes leaves the batch
(its cache rows are dropped, and columns that only padding still uses are trimmed); a newly prefilled group joins it
by left-padding whichever side is shorter. Joining needs a cache whose layers are plain full-attention
:class:`~transformers.cache_utils.DynamicLayer` objects; for other caches (sliding windows, linear attention) the
engine only forms a new batch when the previous one has drained (see :mod:`comptrust_serve.embedded.kvcache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from comptrust_serve.embedded.kvcache import keep_rows, merge_caches
from comptrust_serve.embedded.sampling import RowChoice
from comptrust_serve.embedded.types import FinishReason, GenRequest, GenResult

__all__ = ["Batch", "Row"]

Decode = Callable[[Sequence[int]], str]


@dataclass(eq=False)
class Row:
    """One sequence being generated."""

    request: GenRequest
    choice: RowChoice
    position: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_tokens: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    prefill_logprobs: tuple[float | None, ...] | None = None
    prefill_top_tokens: tuple[tuple[tuple[int, float], ...] | None, ...] | None = None
    finish: FinishReason | None = None
    stop_hit: str | None = None

    def append(
        self,
        token: int,
        logprob: float | None,
        top: tuple[tuple[int, float], ...] | None,
        eos_ids: frozenset[int],
        decode: Decode,
    ) -> None:
        """Record the newly chosen token and decide whether the row is finished (EOS, then stop, then length)."""
        self.tokens.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)
        if top is not None:
            self.top_tokens.append(top)
        if self.request.on_token is not None:
            self.request.on_token(token, logprob, top)
        if token in eos_ids:
            self.finish = "eos_token"
        elif self.request.stop and (hit := self._stop_hit(decode)) is not None:
            self.finish, self.stop_hit = "stop_sequence", hit
        elif len(self.tokens) >= self.request.max_new_tokens:
            self.finish = "length"

    def _stop_hit(self, decode: Decode) -> str | None:
        stops = self.request.stop
        window = max(len(s) for s in stops) + 8
        text = decode(self.tokens[-window:])
        found = [(text.find(s), s) for s in stops if s in text]
        return min(found)[1] if found else None

    def result(self) -> GenResult:
        assert self.finish is not None
        return GenResult(
            prompt_tokens=len(self.request.prompt_ids),
            token_ids=tuple(self.tokens),
            finish_reason=self.finish,
            seed=self.choice.sampling.seed if not self.choice.sampling.greedy else None,
            stop_sequence=self.stop_hit,
            logprobs=tuple(self.logprobs) if self.request.logprobs else None,
            top_tokens=tuple(self.top_tokens) if self.request.top_n > 0 else None,
            prefill_logprobs=self.prefill_logprobs,
            prefill_top_tokens=self.prefill_top_tokens,
        )


class Batch:
    """Rows plus the KV cache and the attention mask (``[rows, cached tokens]``, 0 for padding) they share."""

    def __init__(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, mergeable: bool) -> None:
        self.rows = rows
        self.cache = cache
        self.mask = mask
        self.mergeable = mergeable

    @property
    def size(self) -> int:
        return len(self.rows)

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices``, then drop leading columns that are padding in every remaining row."""
        if len(indices) == self.size:
            return
        self.rows = [self.rows[i] for i in indices]
        if not self.rows:
            return
        index = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = 0
        if self.mergeable:
            used = mask.any(dim=0).nonzero()
            start = int(used[0].item()) if used.numel() else 0
        self.mask = mask[:, start:]
        keep_rows(self.cache, index, start)

    def merge(self, other: Batch) -> None:
        """Append ``other``'s rows, left-padding whichever cache is shorter so that both end in the same column."""
        if not (self.mergeable and other.mergeable):
            raise RuntimeError("only caches of plain full-attention layers can be merged")
        mine, theirs = self.mask.shape[1], other.mask.shape[1]
        width = max(mine, theirs)
        pad_mine, pad_theirs = width - mine, width - theirs
        self.mask = torch.cat([F.pad(self.mask, (pad_mine, 0)), F.pad(other.mask, (pad_theirs, 0))], dim=0)
        merge_caches(self.cache, other.cache, pad_mine, pad_theirs)
        self.rows.extend(other.rows)
