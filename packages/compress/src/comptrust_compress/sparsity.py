"""Pure sparsity math on one weight matrix: masks that keep the largest |w|, and the checks that measure them.

Weights are ``[out_features, in_features]`` (``torch.nn.Linear``); N:M groups are M consecutive weights along the
input dimension, as sparse tensor cores and vLLM's 2:4 kernels expect. A mask is a bool tensor: True keeps a weight.
"""

from __future__ import annotations

from typing import Any

import torch
from comptrust_core import ConfigError

__all__ = ["check_nm_widths", "count_zeros", "nm_groups_ok", "nm_keep_mask", "pruned_count", "unstructured_keep_mask"]


def pruned_count(numel: int, sparsity: float) -> int:
    """How many weights an unstructured prune at ``sparsity`` zeroes in a matrix of ``numel`` weights."""
    return int(numel * sparsity)


def unstructured_keep_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the :func:`pruned_count` smallest |w| of the whole matrix (ties broken arbitrarily)."""
    k = pruned_count(weight.numel(), sparsity)
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if k > 0:
        smallest = torch.topk(weight.detach().abs().flatten().float(), k, largest=False, sorted=False).indices
        keep[smallest] = False
    return keep.view_as(weight)


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    if weight.dim() != 2:
        raise ValueError(f"N:M sparsity needs a 2-D weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"N:M sparsity with M={m} needs in_features divisible by {m}, got {cols}")
    return weight.reshape(rows, cols // m, m)


def nm_keep_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of ``m`` consecutive input weights, keep the ``n`` largest |w|."""
    if not 0 < n < m:
        raise ValueError(f"invalid N:M pattern {n}:{m}")
    groups = _groups(weight.detach().abs().float(), m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(groups, n, dim=-1, sorted=False).indices, True)
    return keep.view_as(weight)


def nm_groups_ok(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive input weights holds at most ``n`` nonzeros."""
    nonzeros = (_groups(weight.detach(), m) != 0).sum(dim=-1)
    return bool((nonzeros <= n).all())


def count_zeros(weight: torch.Tensor) -> int:
    return int((weight.detach() == 0).sum())


def check_nm_widths(config: Any, widths: dict[str, tuple[int, int]]) -> None:
    """Refuse ``config.pattern`` (N:M) when a layer's input width is not a multiple of M (a :class:`ConfigError`)."""
    m = int(str(config.pattern).split(":")[1])
    odd = [name for name, (_, cols) in widths.items() if cols % m]
    if odd:
        raise ConfigError(
            f"--pattern {config.pattern} needs in_features divisible by {m}, but {odd[0]} "
            f"(and {len(odd) - 1} more) is not; use --sparsity for unstructured pruning"
        )
