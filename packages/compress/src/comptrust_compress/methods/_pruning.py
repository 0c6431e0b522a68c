"""What every pruning method shares: the level asked for (``--sparsity`` or ``--pattern``), its tag, and the check.

Unstructured (``--sparsity F``): each matrix loses ``int(F * numel)`` weights. N:M (``--pattern 2:4``): in each
group of M consecutive input weights at most N survive; the pattern implies sparsity (M-N)/M.
"""

from __future__ import annotations

from typing import Any, ClassVar

from comptrust_core import ConfigError, MeasuredFacts, MethodSpec

from comptrust_compress.config import CompressConfig, parse_pattern
from comptrust_compress.errors import VerificationError

__all__ = ["PruningLevels", "pruning_target"]

_TOLERANCE = 1e-9


def pruning_target(method: str, config: CompressConfig) -> tuple[float, tuple[int, int] | None]:
    """The sparsity asked for and the N:M pattern (None: unstructured); raise on a missing or conflicting level."""
    nm = parse_pattern(config.pattern) if config.pattern is not None else None
    if nm is None:
        if config.sparsity is None:
            raise ConfigError(
                f"method {method} needs a level: pass --sparsity F (unstructured, 0 < F < 1) or --pattern 2:4|4:8|1:2"
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


class PruningLevels:
    """Mixin for a CompressionMethod that prunes: validation, name tag, manifest spec, layer check, verification."""

    name: ClassVar[str]

    def validate(self, config: CompressConfig) -> None:
        pruning_target(self.name, config)

    def level_tag(self, config: CompressConfig) -> str:
        sparsity, nm = pruning_target(self.name, config)
        return f"{nm[0]}of{nm[1]}" if nm else f"s{sparsity:g}"

    def pruning_spec(self, config: CompressConfig, extra: dict[str, Any]) -> MethodSpec:
        sparsity, _ = pruning_target(self.name, config)
        return MethodSpec(
            name=self.name, sparsity=sparsity, pattern=config.pattern or "unstructured", export="dense", extra=extra
        )

    def check_layers(self, config: CompressConfig, widths: dict[str, tuple[int, int]]) -> dict[str, int]:
        from comptrust_compress.sparsity import check_nm_widths

        _, nm = pruning_target(self.name, config)
        if nm is not None:
            check_nm_widths(config, widths)
        return {}

    def verify(self, facts: MeasuredFacts, config: CompressConfig) -> None:
        from comptrust_compress.sparsity import pruned_count

        sparsity, nm = pruning_target(self.name, config)
        for name, stats in facts.layers.items():
            needed = pruned_count(stats.numel, sparsity) if nm is None else stats.numel * (nm[1] - nm[0]) // nm[1]
            if stats.zeros < needed:
                raise VerificationError(
                    f"{self.name} was asked for sparsity {sparsity:g} but {name} measures {stats.sparsity:.4f} "
                    f"({stats.zeros} of {stats.numel} weights zero, {needed} expected); nothing was written"
                )
        if nm is not None and facts.nm_pattern_holds is not True:
            bad = [name for name, stats in facts.layers.items() if stats.nm_holds is False]
            raise VerificationError(
                f"{self.name} was asked for the {config.pattern} pattern but it does not hold in "
                f"{bad[0] if bad else 'the checkpoint'} ({len(bad)} layer(s)); nothing was written"
            )
