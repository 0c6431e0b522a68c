"""The typed, frozen configuration of one ``compress`` run.

``None`` on a method option means "not given": the method's default applies, and a method that does not take the
option accepts only ``None`` there (see :mod:`comptrust_compress.methods`). Ranges are checked when the object is
built, so an invalid config never exists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

from comptrust_core import ConfigError

__all__ = [
    "BITS_CHOICES",
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_CALIB_SEQLEN",
    "DEFAULT_GROUP_SIZE",
    "METHOD_OPTIONS",
    "CompressConfig",
    "Device",
    "Export",
    "MethodOption",
    "Pattern",
    "flag_name",
    "parse_pattern",
]

Pattern = Literal["unstructured", "2:4", "4:8", "1:2"]
Export = Literal["compressed", "fake-quant"]
Device = Literal["cpu", "cuda"]
MethodOption = Literal[
    "bits",
    "group_size",
    "act_order",
    "sparsity",
    "pattern",
    "calib_data",
    "calib_samples",
    "calib_seqlen",
    "calib_seed",
    "export",
]

BITS_CHOICES: tuple[int, ...] = (2, 3, 4, 8)
DEFAULT_GROUP_SIZE = 128
DEFAULT_CALIB_SAMPLES = 128
DEFAULT_CALIB_SEQLEN = 2048
"""The paper's 128 x 2048 tokens; capped at the model's context length."""
METHOD_OPTIONS: tuple[MethodOption, ...] = get_args(MethodOption)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}$")


def flag_name(option: str) -> str:
    """The command-line spelling of a config field: ``group_size`` → ``--group-size``."""
    return "--" + option.replace("_", "-")


def parse_pattern(pattern: Pattern) -> tuple[int, int] | None:
    """``"2:4"`` → ``(2, 4)``; ``"unstructured"`` → None."""
    if pattern == "unstructured":
        return None
    n, m = pattern.split(":")
    return int(n), int(m)


@dataclass(frozen=True, kw_only=True)
class CompressConfig:
    """Everything one ``compress`` run needs; the CLI flags map one to one onto these fields."""

    model: str
    """An alias (``smollm2-135m-instruct``), a local Hugging Face folder, or a Hugging Face id."""
    method: str
    out: Path
    """The checkpoint folder to create; it must not exist yet."""
    name: str | None = None
    """A short name for tables; derived from the model, method and level when None."""
    bits: int | None = None
    group_size: int | None = None
    """Quantization group size; -1 means one group per output channel. Method default: 128."""
    act_order: bool | None = None
    sparsity: float | None = None
    pattern: Pattern | None = None
    calib_data: str | None = None
    calib_samples: int | None = None
    calib_seqlen: int | None = None
    calib_seed: int | None = None
    export: Export | None = None
    device: Device | None = None
    """None: ``cuda`` when a GPU is visible, else ``cpu``."""
    trust_remote_code: bool = False
    ppl_tokens: int | None = None
    """Tokens of held-out text for perplexity; None: all of it."""

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ConfigError("--model is empty; pass an alias, a local folder or a Hugging Face id")
        if not self.method.strip():
            raise ConfigError("--method is empty; pass a method name (see compress --help)")
        if not str(self.out).strip():
            raise ConfigError("--out is empty; pass the checkpoint folder to create")
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ConfigError(
                f"--name {self.name!r} is not a valid checkpoint name; use letters, digits and . _ + = - "
                "(at most 128, starting with a letter or digit)"
            )
        if self.bits is not None and self.bits not in BITS_CHOICES:
            raise ConfigError(f"--bits {self.bits} is not supported; choose one of {', '.join(map(str, BITS_CHOICES))}")
        if self.group_size is not None and not (self.group_size == -1 or self.group_size >= 1):
            raise ConfigError(f"--group-size {self.group_size} is invalid; pass a positive size, or -1 for per-channel")
        if self.sparsity is not None and not (math.isfinite(self.sparsity) and 0.0 < self.sparsity < 1.0):
            raise ConfigError(f"--sparsity {self.sparsity} is out of range; pass a fraction strictly between 0 and 1")
        if self.pattern is not None and self.pattern not in get_args(Pattern):
            raise ConfigError(f"--pattern {self.pattern!r} is unknown; choose one of {', '.join(get_args(Pattern))}")
        if self.export is not None and self.export not in get_args(Export):
            raise ConfigError(f"--export {self.export!r} is unknown; choose one of {', '.join(get_args(Export))}")
        if self.device is not None and self.device not in get_args(Device):
            raise ConfigError(f"--device {self.device!r} is unknown; choose one of {', '.join(get_args(Device))}")
        for option, minimum in (("calib_samples", 1), ("calib_seqlen", 8), ("calib_seed", 0), ("ppl_tokens", 16)):
            value = getattr(self, option)
            if value is not None and value < minimum:
                raise ConfigError(f"{flag_name(option)} {value} is too small; pass at least {minimum}")

    def given_options(self) -> tuple[MethodOption, ...]:
        """The method options set on this config (not None), in flag order."""
        present = {f.name for f in fields(self) if getattr(self, f.name) is not None}
        return tuple(option for option in METHOD_OPTIONS if option in present)
