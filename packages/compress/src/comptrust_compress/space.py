"""How much disk a checkpoint takes, known before it is written: from the source's safetensors headers (every
tensor's shape, read without loading a weight), the storage dtype, and, for a quantized checkpoint exported compressed,
the packed width of its quantized layers plus their scales and zero points. ``compress`` refuses to start when the
output's filesystem clearly cannot hold it, and a write that fails midway is reported with this size."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from comptrust_compress.methods.base import Job

__all__ = ["checkpoint_bytes", "parameter_count"]

_HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors header is JSON; anything larger is not one


def _numel(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


def parameter_count(folder: Path) -> int:
    """The number of weights in ``folder``'s ``*.safetensors`` files, from their headers alone."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            size = fh.read(8)
            if len(size) != 8:
                continue
            (length,) = struct.unpack("<Q", size)
            if length > _HEADER_LIMIT:
                continue
            header = json.loads(fh.read(length))
        total += sum(_numel(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def checkpoint_bytes(source: Path, job: Job, *, store_bytes: int, bits: int | None, packed: bool) -> int:
    """About the size of the checkpoint made from ``source``: its weights at ``store_bytes`` each, except, when
    ``packed`` (a quantized checkpoint exported compressed), the layers in ``job.group_sizes`` at ``bits`` per weight
    plus one scale and one zero point per group; and the source's other files (tokenizer, configs)."""
    params = parameter_count(source)
    weights = params * store_bytes
    if packed and job.group_sizes and bits:
        for layer, group in job.group_sizes.items():
            out_features, in_features = job.widths.get(layer, (0, 0))
            dense = out_features * in_features
            groups = out_features * math.ceil(in_features / group) if group > 0 else out_features
            weights += math.ceil(dense * bits / 8) + groups * 2 * store_bytes - dense * store_bytes
    others = sum(p.stat().st_size for p in source.iterdir() if p.is_file() and p.suffix != ".safetensors")
    return max(0, weights) + others
