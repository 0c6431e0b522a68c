"""Group sizes per layer, and the check that quantized weights really hold few levels per group.

The rule for a layer whose input width is not a multiple of the asked group size (llm-compressor refuses such layers,
and its bypass flag crashes later): use the **largest group size, at most the one asked for, that divides the
layer's input width**. SmolLM2-135M (hidden 576) asked for 128 gets 96 on its q/k/v/o/gate/up projections and 128 on
down_proj (input 1536). ``-1`` (one group per output channel) applies to every width as it is. A layer narrower
than the asked group size is refused: there is no group of that size to make.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from comptrust_core import ConfigError

__all__ = ["effective_group_size", "group_sizes", "max_levels_per_group", "targets_by_group_size"]


def effective_group_size(in_features: int, asked: int) -> int:
    """The largest divisor of ``in_features`` that is at most ``asked`` (``asked`` itself when it divides)."""
    if asked == -1:
        return -1
    if asked < 1:
        raise ValueError(f"group size must be positive or -1, got {asked}")
    for size in range(min(asked, in_features), 0, -1):
        if in_features % size == 0:
            return size
    raise AssertionError("unreachable: 1 divides every width")  # pragma: no cover


def group_sizes(widths: dict[str, tuple[int, int]], asked: int) -> dict[str, int]:
    """The group size of every layer (``name → (out_features, in_features)``) under the rule above.

    A layer with fewer inputs than ``asked`` is a :class:`ConfigError`, raised before any work.
    """
    if asked != -1:
        narrow = {name: w[1] for name, w in widths.items() if w[1] < asked}
        if narrow:
            name, width = next(iter(narrow.items()))
            raise ConfigError(
                f"--group-size {asked} is larger than layer {name} (input width {width}"
                f"{f', and {len(narrow) - 1} more layer(s)' if len(narrow) > 1 else ''}); pass --group-size "
                f"{max(d for d in range(1, width + 1) if width % d == 0)} or smaller, or -1 for per-channel"
            )
    return {name: effective_group_size(w[1], asked) for name, w in widths.items()}


def targets_by_group_size(sizes: dict[str, int]) -> dict[int, list[str]]:
    """llm-compressor targets for each distinct group size: one ``re:`` pattern per module suffix when every module
    with that suffix (``self_attn.q_proj``) shares the size, else the exact module names."""
    by_suffix: dict[str, set[int]] = defaultdict(set)
    for name, size in sizes.items():
        by_suffix[_suffix(name)].add(size)
    targets: dict[int, list[str]] = defaultdict(list)
    for name, size in sizes.items():
        suffix = _suffix(name)
        if len(by_suffix[suffix]) == 1:
            pattern = rf"re:.*\.{re.escape(suffix)}$"
            if pattern not in targets[size]:
                targets[size].append(pattern)
        else:
            targets[size].append(name)
    return dict(sorted(targets.items()))


def _suffix(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` → ``self_attn.q_proj`` (the part after the layer index)."""
    parts = name.split(".")
    digits = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[digits[-1] + 1 :]) if digits else name


def max_levels_per_group(weight: torch.Tensor, group_size: int) -> int:
    """The most distinct values in any group of ``group_size`` consecutive input weights of any row.

    ``-1``: one group per row. A weight quantized to b bits holds at most 2^b levels per group.
    """
    rows, cols = weight.shape
    size = cols if group_size == -1 else group_size
    if cols % size:
        raise ValueError(f"group size {size} does not divide the input width {cols}")
    groups = weight.detach().reshape(rows * (cols // size), size)
    ordered = torch.sort(groups, dim=1).values
    distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    return int(distinct.max())
