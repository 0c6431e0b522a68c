"""``magnitude``: zero the smallest |w| of every Linear weight matrix in the decoder layers, one layer at a time.

Unstructured (``--sparsity F``): each matrix loses its ``int(F * numel)`` smallest weights. N:M (``--pattern 2:4``):
in each group of M consecutive input weights the N largest survive; the pattern implies sparsity (M-N)/M.
Embeddings and the LM head are not touched. No calibration data is used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from comptrust_core import ConfigError, MeasuredFacts, MethodSpec

from comptrust_compress.config import CompressConfig, parse_pattern
from comptrust_compress.errors import VerificationError
from comptrust_compress.methods.base import CompressionMethod, register_method

if TYPE_CHECKING:
    import torch

__all__ = ["MagnitudePruning"]

log = logging.getLogger(__name__)

_TOLERANCE = 1e-9


def _target(config: CompressConfig) -> tuple[float, tuple[int, int] | None]:
    """The sparsity asked for and the N:M pattern (None: unstructured); raise on a missing or conflicting level."""
    nm = parse_pattern(config.pattern) if config.pattern is not None else None
    if nm is None:
        if config.sparsity is None:
            raise ConfigError(
                "method magnitude needs a level: pass --sparsity F (unstructured, 0 < F < 1) or --pattern 2:4|4:8|1:2"
            )
        return config.sparsity, None
    n, m = nm
    implied = (m - n) / m
    if config.sparsity is not None and abs(config.sparsity - implied) > _TOLERANCE:
        raise ConfigError(
            f"--sparsity {config.sparsity} conflicts with --pattern {config.pattern}, which implies sparsity "
            f"{implied:g}; drop --sparsity"
        )
    return implied, nm


@register_method
class MagnitudePruning(CompressionMethod):
    name = "magnitude"
    summary = "prune the smallest |w| per weight matrix, unstructured (--sparsity) or N:M (--pattern)"
    options = frozenset({"sparsity", "pattern"})

    def validate(self, config: CompressConfig) -> None:
        _target(config)

    def level_tag(self, config: CompressConfig) -> str:
        sparsity, nm = _target(config)
        return f"{nm[0]}of{nm[1]}" if nm else f"s{sparsity:g}"

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        sparsity, _ = _target(config)
        return MethodSpec(
            name=self.name,
            sparsity=sparsity,
            pattern=config.pattern or "unstructured",
            export="dense",
            extra={"scope": "per-matrix", "score": "abs-weight"},
        )

    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: torch.device) -> None:
        import torch

        from comptrust_compress.layerwise import compressible_linears, for_each_layer
        from comptrust_compress.sparsity import nm_keep_mask, unstructured_keep_mask

        sparsity, nm = _target(config)
        if nm is not None:
            m = nm[1]
            odd = [name for name, lin in compressible_linears(model).items() if lin.in_features % m]
            if odd:
                raise ConfigError(
                    f"--pattern {config.pattern} needs in_features divisible by {m}, but {odd[0]} "
                    f"(and {len(odd) - 1} more) is not; use --sparsity for unstructured pruning"
                )

        def prune_layer(prefix: str, layer: torch.nn.Module, linears: dict[str, torch.nn.Linear]) -> None:
            with torch.no_grad():
                for linear in linears.values():
                    weight = linear.weight
                    keep = unstructured_keep_mask(weight, sparsity) if nm is None else nm_keep_mask(weight, *nm)
                    weight.mul_(keep.to(weight.dtype))

        for_each_layer(model, device, prune_layer)
        log.info("magnitude: pruned %s to %s", type(model).__name__, config.pattern or f"sparsity {sparsity:g}")

    def verify(self, facts: MeasuredFacts, config: CompressConfig) -> None:
        from comptrust_compress.sparsity import pruned_count

        sparsity, nm = _target(config)
        for name, stats in facts.layers.items():
            needed = pruned_count(stats.numel, sparsity) if nm is None else stats.numel * (nm[1] - nm[0]) // nm[1]
            if stats.zeros < needed:
                raise VerificationError(
                    f"magnitude was asked for sparsity {sparsity:g} but {name} measures {stats.sparsity:.4f} "
                    f"({stats.zeros} of {stats.numel} weights zero, {needed} expected); nothing was written"
                )
        if nm is not None and facts.nm_pattern_holds is not True:
            bad = [name for name, stats in facts.layers.items() if stats.nm_holds is False]
            raise VerificationError(
                f"magnitude was asked for the {config.pattern} pattern but it does not hold in "
                f"{bad[0] if bad else 'the checkpoint'} ({len(bad)} layer(s)); nothing was written"
            )
