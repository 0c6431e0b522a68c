"""The per-layer group size rule, the llm-compressor targets built from it, and the levels-per-group measurement."""

from __future__ import annotations

import pytest
import torch
from comptrust_compress.quantgroups import (
    effective_group_size,
    group_sizes,
    max_levels_per_group,
    targets_by_group_size,
)
from comptrust_core import ConfigError


def _brute_force(width: int, asked: int) -> int:
    return max(d for d in range(1, asked + 1) if width % d == 0)


@pytest.mark.parametrize("width", [576, 1536, 36, 72, 64, 4096, 11008, 97])
@pytest.mark.parametrize("asked", [128, 64, 32, 7])
def test_largest_divisor_at_most_the_asked_size(width: int, asked: int) -> None:
    assert effective_group_size(width, asked) == _brute_force(width, asked)


def test_smollm2_widths() -> None:
    widths = {f"model.layers.{i}.self_attn.q_proj": (576, 576) for i in range(2)}
    widths |= {f"model.layers.{i}.mlp.down_proj": (576, 1536) for i in range(2)}
    sizes = group_sizes(widths, 128)
    assert sizes == {
        "model.layers.0.self_attn.q_proj": 96,
        "model.layers.1.self_attn.q_proj": 96,
        "model.layers.0.mlp.down_proj": 128,
        "model.layers.1.mlp.down_proj": 128,
    }
    assert targets_by_group_size(sizes) == {96: [r"re:.*\.self_attn\.q_proj$"], 128: [r"re:.*\.mlp\.down_proj$"]}
    assert group_sizes(widths, -1) == dict.fromkeys(widths, -1)


def test_mixed_sizes_for_one_suffix_fall_back_to_exact_names() -> None:
    sizes = {"model.layers.0.mlp.up_proj": 64, "model.layers.1.mlp.up_proj": 32, "model.layers.0.o_proj": 64}
    assert targets_by_group_size(sizes) == {
        32: ["model.layers.1.mlp.up_proj"],
        64: ["model.layers.0.mlp.up_proj", r"re:.*\.o_proj$"],
    }


def test_group_larger_than_a_layer_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--group-size 128 is larger than layer a \(input width 36\); pass --group"):
        group_sizes({"a": (10, 36), "b": (10, 256)}, 128)


def test_levels_per_group() -> None:
    weight = torch.tensor([[1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]])
    assert max_levels_per_group(weight, 4) == 4
    assert max_levels_per_group(weight, 2) == 2
    assert max_levels_per_group(weight, -1) == 5
    with pytest.raises(ValueError, match="does not divide"):
        max_levels_per_group(weight, 3)
    quantized = torch.randint(-8, 8, (16, 64)).float() * 0.01
    assert max_levels_per_group(quantized, 32) <= 16
    assert max_levels_per_group(torch.randn(16, 64), 32) == 32
