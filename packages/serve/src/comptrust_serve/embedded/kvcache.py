"""A KV cache that grows in place, and the row operations continuous batching needs on it.

transformers' :class:`~transformers.cache_utils.DynamicLayer` concatenates every new token onto the whole cache,
which copies all of it at every decode step (measured at about 30% of a CPU decode step at batch 32). A
:class:`GrowingLayer` keeps keys and values in buffers with spare room along the sequence axis and writes each step's
tokens in place; ``keys``/``values`` are views of the filled part. Rows leave (:func:`keep_rows`) or join
(:func:`merge_caches`) through one copy each. Models whose layers are not plain full attention (sliding windows,
linear attention) keep transformers' own layers and can only drop rows.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["GrowingLayer", "keep_rows", "merge_caches", "new_cache"]

_MIN_ROOM = 64


def _room(length: int) -> int:
    return length + max(_MIN_ROOM, length // 2)


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A full-attention cache layer whose storage has spare capacity along the sequence axis."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0

    def filled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the keys and values written so far (``[rows, heads, length, dim]``)."""
        assert self._k is not None and self._v is not None
        keys, values = self._k[:, :, : self._len], self._v[:, :, : self._len]
        self.keys, self.values = keys, values
        return keys, values

    def _store(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy ``keys``/``values`` into fresh buffers of ``capacity`` positions."""
        rows, heads, length, _ = keys.shape
        self._k = keys.new_empty((rows, heads, capacity, keys.shape[-1]))
        self._v = values.new_empty((rows, heads, capacity, values.shape[-1]))
        self._k[:, :, :length] = keys
        self._v[:, :, :length] = values
        self._len = length
        return self.filled()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._k is None or self._v is None:
            return self._store(key_states, value_states, _room(new))
        if self._len + new > self._k.shape[-2]:
            self._store(*self.filled(), _room(self._len + new))
        assert self._k is not None and self._v is not None
        self._k[:, :, self._len : self._len + new] = key_states
        self._v[:, :, self._len : self._len + new] = value_states
        self._len += new
        return self.filled()

    def select(self, index: torch.Tensor, start: int) -> None:
        """Keep rows ``index`` and sequence positions from ``start`` on."""
        if self._k is None:
            return
        keys, values = self.filled()
        keys = keys[:, :, start:].index_select(0, index)
        values = values[:, :, start:].index_select(0, index)
        self._store(keys, values, _room(keys.shape[-2]))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select(indices, 0)

    def join(self, other: GrowingLayer, pad_mine: int, pad_theirs: int) -> None:
        """Stack ``other``'s rows under ours, left-padding each side with zeros to a common length."""
        (my_keys, my_values), (their_keys, their_values) = self.filled(), other.filled()
        width = my_keys.shape[-2] + pad_mine
        rows, split = my_keys.shape[0] + their_keys.shape[0], my_keys.shape[0]
        keys = my_keys.new_zeros((rows, my_keys.shape[1], _room(width), my_keys.shape[-1]))
        values = my_values.new_zeros((rows, my_values.shape[1], _room(width), my_values.shape[-1]))
        keys[:split, :, pad_mine:width] = my_keys
        keys[split:, :, pad_theirs:width] = their_keys
        values[:split, :, pad_mine:width] = my_values
        values[split:, :, pad_theirs:width] = their_values
        self._k, self._v, self._len = keys, values, width
        self.filled()


def new_cache(config: Any) -> tuple[DynamicCache, bool]:
    """A cache for one forward pass of a new group, and whether its rows can later join another cache."""
    cache = DynamicCache(config=config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [GrowingLayer() for _ in cache.layers]
        return cache, True
    return cache, False


def _growing(cache: DynamicCache) -> list[GrowingLayer] | None:
    layers: list[Any] = list(cache.layers)
    return layers if all(isinstance(layer, GrowingLayer) for layer in layers) else None


def keep_rows(cache: DynamicCache, index: torch.Tensor, start: int) -> None:
    """Keep the rows at ``index``; where the cache allows it, also drop the first ``start`` positions."""
    layers = _growing(cache)
    if layers is None:
        plain: list[Any] = list(cache.layers)
        for layer in plain:
            layer.batch_select_indices(index)
        return
    for layer in layers:
        layer.select(index, start)


def merge_caches(mine: DynamicCache, theirs: DynamicCache, pad_mine: int, pad_theirs: int) -> None:
    """Append ``theirs``' rows to ``mine``, left-padding each by the given number of positions."""
    a, b = _growing(mine), _growing(theirs)
    if a is None or b is None:
        raise RuntimeError("only caches of plain full-attention layers can be merged")
    for layer, other in zip(a, b, strict=True):
        layer.join(other, pad_mine, pad_theirs)
