"""``dense``: no compression. The base model written as a checkpoint, so the baseline is measured like the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comptrust_core import MeasuredFacts, MethodSpec

from comptrust_compress.config import CompressConfig
from comptrust_compress.errors import VerificationError
from comptrust_compress.methods.base import CompressionMethod, Job, register_method

if TYPE_CHECKING:
    import torch

__all__ = ["Dense"]

# Writing the base model in its 16-bit storage dtype may round float32 weights; more drift than this is a bug.
PERPLEXITY_DRIFT = 0.02


@register_method
class Dense(CompressionMethod):
    name = "dense"
    summary = "no compression: the base model as a checkpoint, with its manifest and measured perplexity"

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        return MethodSpec(name=self.name, export="dense")

    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: torch.device, job: Job) -> None:
        return None

    def verify(self, facts: MeasuredFacts, config: CompressConfig) -> None:
        before, after = facts.perplexity_before, facts.perplexity_after
        if before is not None and after is not None and abs(after / before - 1.0) > PERPLEXITY_DRIFT:
            raise VerificationError(
                f"dense checkpoint perplexity {after:.3f} differs from the base model's {before:.3f} by more than "
                f"{PERPLEXITY_DRIFT:.0%}; the weights were not written faithfully, nothing was written"
            )
