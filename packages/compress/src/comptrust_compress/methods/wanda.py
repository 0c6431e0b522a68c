"""``wanda``: Wanda pruning (Sun et al. 2023), |w| x input activation norm per output row, by llm-compressor."""

from __future__ import annotations

from comptrust_compress.methods._llmc_pruning import PruningMethod
from comptrust_compress.methods.base import register_method

__all__ = ["Wanda"]


@register_method
class Wanda(PruningMethod):
    name = "wanda"
    summary = "Wanda pruning (--sparsity or --pattern) on calibration data, via llm-compressor"
    score = "abs-weight-x-activation-norm"
    modifier = ("llmcompressor.modifiers.pruning.wanda", "WandaPruningModifier")
