"""``rtn``: round-to-nearest weight quantization in groups (llm-compressor's ``QuantizationModifier``, no data).

The baseline GPTQ and AWQ are measured against: same bits, groups and export, no calibration.
"""

from __future__ import annotations

from typing import Any

from comptrust_compress.config import CompressConfig
from comptrust_compress.methods._llmcompressor import QuantizingMethod
from comptrust_compress.methods.base import Job, register_method

__all__ = ["RoundToNearest"]


@register_method
class RoundToNearest(QuantizingMethod):
    name = "rtn"
    summary = "round-to-nearest quantization (--bits, --group-size), no calibration data, via llm-compressor"
    options = frozenset({"bits", "group_size", "export"})
    needs_calibration = False
    symmetric = True

    def recipe(self, config: CompressConfig, job: Job) -> list[Any]:
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [QuantizationModifier(config_groups=self.config_groups(config, job))]
