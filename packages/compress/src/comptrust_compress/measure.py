"""Measurements on a written checkpoint: zeros per layer, the N:M pattern on every group, stored bits, peak memory."""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from comptrust_core import LayerStats

from comptrust_compress._fs import weight_files
from comptrust_compress.errors import VerificationError
from comptrust_compress.layerwise import compressible_linears
from comptrust_compress.sparsity import count_zeros, nm_groups_ok

__all__ = ["WeightFacts", "measure_weights", "peak_memory", "quant_levels_max", "stored_bits_per_weight"]

# Bits per element of the safetensors dtypes a dense checkpoint may hold.
_DTYPE_BITS = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U8": 8,
    "BOOL": 8,
}


@dataclass(frozen=True)
class WeightFacts:
    layers: dict[str, LayerStats]
    """Per compressible Linear module, keyed by its qualified name."""
    sparsity: float
    nm_pattern_holds: bool | None
    """None when no N:M pattern was asked for."""


def measure_weights(model: Any, nm: tuple[int, int] | None) -> WeightFacts:
    """Zero counts of every compressible weight matrix of ``model``; with ``nm``, check every group of M."""
    layers: dict[str, LayerStats] = {}
    for name, linear in compressible_linears(model).items():
        weight = linear.weight
        zeros = count_zeros(weight)
        holds: bool | None = None
        if nm is not None:
            holds = weight.shape[1] % nm[1] == 0 and nm_groups_ok(weight, *nm)
        layers[name] = LayerStats(numel=weight.numel(), zeros=zeros, sparsity=zeros / weight.numel(), nm_holds=holds)
    total = sum(s.numel for s in layers.values())
    zeros = sum(s.zeros for s in layers.values())
    nm_holds = None if nm is None else all(s.nm_holds for s in layers.values())
    return WeightFacts(layers=layers, sparsity=zeros / total, nm_pattern_holds=nm_holds)


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(length))
    return header


def stored_bits_per_weight(folder: Path, numels: dict[str, int]) -> float:
    """Bits each compressible weight takes in the checkpoint's files, averaged over ``numels`` (name → weights).

    Every tensor stored for a module's weight counts: ``weight`` for dense storage (the dtype's width), and for
    compressed-tensors ``weight_packed`` plus ``weight_scale``, ``weight_zero_point``, ``weight_g_idx`` and
    ``weight_shape``, so 4-bit groups of 128 with bfloat16 scales come to a little over 4.
    """
    entries: dict[str, Any] = {}
    for path in weight_files(folder):
        entries.update(_safetensors_header(path))
    bits = 0
    for name in numels:
        stored = [entry for key, entry in entries.items() if key.startswith(f"{name}.weight")]
        if not stored:
            raise VerificationError(f"the written checkpoint in {folder} has no tensor {name}.weight")
        for entry in stored:
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            bits += _DTYPE_BITS[entry["dtype"]] * count
    return bits / sum(numels.values())


def quant_levels_max(model: Any, group_sizes: dict[str, int]) -> int:
    """The most distinct values in any quantization group (``group_sizes``: layer → size) of ``model``."""
    from comptrust_compress.quantgroups import max_levels_per_group

    linears = compressible_linears(model)
    return max(max_levels_per_group(linears[name].weight, size) for name, size in group_sizes.items())


def peak_memory(device: torch.device) -> tuple[int | None, str]:
    """Peak memory so far and where: CUDA → ``torch.cuda.max_memory_allocated``; CPU → the process's peak RSS."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.max_memory_allocated(index)), f"cuda:{index}"
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None, "cpu"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "cpu (process peak RSS)"
