"""The pruning methods llm-compressor runs (sparsegpt, wanda): level checks shared with magnitude, dense export."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from comptrust_core import MethodSpec

from comptrust_compress.config import CompressConfig, MethodOption
from comptrust_compress.methods._llmcompressor import LlmCompressorMethod, decoder_targets
from comptrust_compress.methods._pruning import PruningLevels, pruning_target
from comptrust_compress.methods.base import Job

__all__ = ["PRUNING_OPTIONS", "PruningMethod"]

PRUNING_OPTIONS: frozenset[MethodOption] = frozenset(
    {"sparsity", "pattern", "calib_data", "calib_samples", "calib_seqlen", "calib_seed"}
)


class PruningMethod(PruningLevels, LlmCompressorMethod):
    """A llm-compressor pruning modifier applied to exactly the decoder layers' Linears; the result is saved dense."""

    options = PRUNING_OPTIONS
    score: ClassVar[str]
    """What decides which weights go (recorded in the manifest)."""
    modifier: ClassVar[tuple[str, str]]
    """llm-compressor's modifier: (module, class name), imported only when the method runs."""
    modifier_options: ClassVar[dict[str, Any]] = {}

    def recipe(self, config: CompressConfig, job: Job) -> list[Any]:
        module, cls = self.modifier
        sparsity, nm = pruning_target(self.name, config)
        modifier = getattr(importlib.import_module(module), cls)
        return [
            modifier(
                sparsity=sparsity,
                mask_structure=f"{nm[0]}:{nm[1]}" if nm else "0:0",
                targets=decoder_targets(list(job.widths)),
                **self.modifier_options,
            )
        ]

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        return self.pruning_spec(config, {"scope": "per-row", "score": self.score})
