"""``magnitude``: zero the smallest |w| of every Linear weight matrix in the decoder layers, one layer at a time.

Unstructured (``--sparsity F``): each matrix loses its ``int(F * numel)`` smallest weights. N:M (``--pattern 2:4``):
in each group of M consecutive input weights the N largest survive; the pattern implies sparsity (M-N)/M.
Embeddings and the LM head are not touched. No calibration data is used. (llm-compressor's
MagnitudePruningModifier reports success in ``oneshot`` but leaves the weights dense, so this one is ours.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from comptrust_core import MethodSpec

from comptrust_compress.config import CompressConfig
from comptrust_compress.methods._pruning import PruningLevels, pruning_target
from comptrust_compress.methods.base import CompressionMethod, Job, register_method

if TYPE_CHECKING:
    import torch

__all__ = ["MagnitudePruning"]

log = logging.getLogger(__name__)


@register_method
class MagnitudePruning(PruningLevels, CompressionMethod):
    name = "magnitude"
    summary = "prune the smallest |w| per weight matrix, unstructured (--sparsity) or N:M (--pattern)"
    options = frozenset({"sparsity", "pattern"})

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        return self.pruning_spec(config, {"scope": "per-matrix", "score": "abs-weight"})

    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: torch.device, job: Job) -> None:
        import torch

        from comptrust_compress.layerwise import for_each_layer
        from comptrust_compress.sparsity import nm_keep_mask, unstructured_keep_mask

        sparsity, nm = pruning_target(self.name, config)

        def prune_layer(prefix: str, layer: torch.nn.Module, linears: dict[str, torch.nn.Linear]) -> None:
            with torch.no_grad():
                for linear in linears.values():
                    weight = linear.weight
                    keep = unstructured_keep_mask(weight, sparsity) if nm is None else nm_keep_mask(weight, *nm)
                    weight.mul_(keep.to(weight.dtype))

        for_each_layer(model, device, prune_layer)
        log.info("magnitude: pruned %s to %s", type(model).__name__, config.pattern or f"sparsity {sparsity:g}")
