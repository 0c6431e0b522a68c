"""The magnitude math against brute force: unstructured fractions and every N:M group."""

from __future__ import annotations

import pytest
import torch
from comptrust_compress.sparsity import (
    count_zeros,
    nm_groups_ok,
    nm_keep_mask,
    pruned_count,
    unstructured_keep_mask,
)


@pytest.mark.parametrize("sparsity", [0.1, 1 / 3, 0.5, 0.9])
def test_unstructured_zeroes_exactly_the_smallest(sparsity: float) -> None:
    torch.manual_seed(1)
    weight = torch.randn(16, 24)
    pruned = weight * unstructured_keep_mask(weight, sparsity)
    flat = weight.abs().flatten().tolist()
    k = int(len(flat) * sparsity)
    assert count_zeros(pruned) == k == pruned_count(weight.numel(), sparsity)
    # brute force: the k smallest |w| are exactly the zeroed ones
    order = sorted(range(len(flat)), key=lambda i: flat[i])
    zeroed = {i for i, v in enumerate(pruned.flatten().tolist()) if v == 0.0}
    assert zeroed == set(order[:k])


def test_unstructured_with_ties_zeroes_exactly_k() -> None:
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 1.0, 3.0]])
    pruned = weight * unstructured_keep_mask(weight, 0.5)
    assert count_zeros(pruned) == 4
    assert pruned[1, 1] == 2.0 and pruned[1, 3] == 3.0


def test_unstructured_tiny_fraction_prunes_nothing() -> None:
    weight = torch.randn(3, 3)
    assert bool(unstructured_keep_mask(weight, 0.05).all())


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 2)])
def test_nm_keeps_the_n_largest_of_every_group(n: int, m: int) -> None:
    torch.manual_seed(2)
    weight = torch.randn(6, 32)
    pruned = weight * nm_keep_mask(weight, n, m)
    for row in range(weight.shape[0]):
        for start in range(0, weight.shape[1], m):
            group = weight[row, start : start + m].abs().tolist()
            largest = set(sorted(range(m), key=lambda i: -group[i])[:n])
            kept = {i for i in range(m) if pruned[row, start + i] != 0}
            assert kept == largest, (row, start)
    assert count_zeros(pruned) == weight.numel() * (m - n) // m
    assert nm_groups_ok(pruned, n, m)


def test_nm_check_finds_a_single_bad_group() -> None:
    weight = torch.randn(4, 16)
    pruned = weight * nm_keep_mask(weight, 2, 4)
    assert nm_groups_ok(pruned, 2, 4)
    pruned[3, 13] = 0.5
    pruned[3, 12] = 0.5
    pruned[3, 14] = 0.5
    assert not nm_groups_ok(pruned, 2, 4)
    assert not nm_groups_ok(weight, 2, 4)


def test_nm_needs_divisible_in_features() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        nm_keep_mask(torch.randn(4, 12), 4, 8)
    with pytest.raises(ValueError, match="invalid N:M"):
        nm_keep_mask(torch.randn(4, 8), 4, 4)
