"""``awq``: activation-aware weight quantization (Lin et al. 2023) by llm-compressor, which absorbed AutoAWQ.

AWQ searches per-channel scales on calibration activations (llm-compressor's ``AWQModifier``), then the weights are
quantized round-to-nearest in groups with zero points (``QuantizationModifier``), as AutoAWQ did.
"""

from __future__ import annotations

from typing import Any

from comptrust_compress.config import CompressConfig
from comptrust_compress.methods._llmcompressor import QuantizingMethod
from comptrust_compress.methods.base import Job, register_method

__all__ = ["Awq"]


@register_method
class Awq(QuantizingMethod):
    name = "awq"
    summary = "AWQ quantization (--bits, --group-size) on calibration data, via llm-compressor"
    options = frozenset({"bits", "group_size", "export", "calib_data", "calib_samples", "calib_seqlen", "calib_seed"})
    symmetric = False

    def recipe(self, config: CompressConfig, job: Job) -> list[Any]:
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=self.config_groups(config, job))]
