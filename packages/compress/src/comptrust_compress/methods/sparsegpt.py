"""``sparsegpt``: SparseGPT pruning (Frantar & Alistarh 2023) by llm-compressor, with weight reconstruction."""

from __future__ import annotations

from typing import Any, ClassVar

from comptrust_compress.methods._llmc_pruning import PruningMethod
from comptrust_compress.methods._llmcompressor import DAMPENING
from comptrust_compress.methods.base import register_method

__all__ = ["SparseGpt"]


@register_method
class SparseGpt(PruningMethod):
    name = "sparsegpt"
    summary = "SparseGPT pruning (--sparsity or --pattern) on calibration data, via llm-compressor"
    score = "obs-hessian"
    modifier = ("llmcompressor.modifiers.pruning.sparsegpt", "SparseGPTModifier")
    modifier_options: ClassVar[dict[str, Any]] = {"dampening_frac": DAMPENING}
