"""``gptq``: GPTQ weight quantization (Frantar et al. 2022) by llm-compressor, layer by layer on calibration data.

``--act-order`` (the default) quantizes columns in order of decreasing Hessian diagonal with llm-compressor's
``static`` ordering, which keeps groups contiguous (no ``g_idx`` in the checkpoint, full-speed kernels).
"""

from __future__ import annotations

from typing import Any

from comptrust_compress.config import CompressConfig
from comptrust_compress.methods._llmcompressor import DAMPENING, QuantizingMethod
from comptrust_compress.methods.base import Job, register_method

__all__ = ["Gptq"]


@register_method
class Gptq(QuantizingMethod):
    name = "gptq"
    summary = "GPTQ quantization (--bits, --group-size, --act-order) on calibration data, via llm-compressor"
    options = frozenset(
        {"bits", "group_size", "act_order", "export", "calib_data", "calib_samples", "calib_seqlen", "calib_seed"}
    )
    symmetric = True

    def actorder(self, config: CompressConfig) -> str | None:
        return None if config.act_order is False else "static"

    def recipe(self, config: CompressConfig, job: Job) -> list[Any]:
        from llmcompressor.modifiers.gptq import GPTQModifier

        return [
            GPTQModifier(
                config_groups=self.config_groups(config, job),
                actorder=self.actorder(config),
                dampening_frac=DAMPENING,
            )
        ]
