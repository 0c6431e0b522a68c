"""The checkpoint manifest: ``comptrust.json`` beside the Hugging Face files of every checkpoint ``compress`` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from comptrust_core._io import atomic_write_text, check_schema_version, read_json
from comptrust_core.errors import CheckpointError, ComptrustError
from comptrust_core.paths import MANIFEST_FILE

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "BackendInfo",
    "BaseModelRef",
    "CalibrationSpec",
    "LayerStats",
    "Manifest",
    "MeasuredFacts",
    "MethodSpec",
    "ServingHints",
    "read_manifest",
    "write_manifest",
]

MANIFEST_SCHEMA_VERSION = 1

Pattern = Literal["unstructured", "2:4", "4:8", "1:2"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaseModelRef(_Frozen):
    """Where the uncompressed weights came from."""

    source: str = Field(description="what the user passed: an alias, a Hugging Face id or a local folder")
    kind: Literal["alias", "hub", "local"]
    resolved_path: str | None = Field(default=None, description="the local folder the weights were read from")
    revision: str | None = None
    content_hash: str = Field(description="sha256 over the weight files, 'sha256:<hex>'")


class MethodSpec(_Frozen):
    """The compression method and every parameter that changes its output."""

    name: str
    bits: int | None = None
    group_size: int | None = None
    act_order: bool | None = None
    sparsity: float | None = None
    pattern: Pattern | None = None
    export: Literal["compressed", "fake-quant", "dense"] = "dense"
    group_size_by_layer: dict[str, int] = Field(
        default_factory=dict, description="the group size actually used per layer, where it differs from group_size"
    )
    extra: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class CalibrationSpec(_Frozen):
    source: str
    samples: int
    seqlen: int
    seed: int
    content_hash: str | None = Field(default=None, description="sha256 of the token ids actually used")


class BackendInfo(_Frozen):
    name: str
    version: str
    device: str
    torch_version: str | None = None
    transformers_version: str | None = None


class LayerStats(_Frozen):
    numel: int
    zeros: int
    sparsity: float
    nm_holds: bool | None = None


class MeasuredFacts(_Frozen):
    """Numbers measured on the written checkpoint, not requested ones."""

    sparsity: float = Field(description="zero fraction over all compressible (linear) weights")
    layers: dict[str, LayerStats] = Field(default_factory=dict)
    nm_pattern_holds: bool | None = Field(default=None, description="every group of M holds at most N nonzeros")
    effective_bits: float = Field(description="stored bits per compressible weight, scales and zero points included")
    quant_levels_max: int | None = Field(
        default=None,
        description="the most distinct weight values in any quantization group of any layer (at most 2**bits when "
        "the weights really are quantized); None when nothing was quantized",
    )
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    perplexity_text: str | None = Field(default=None, description="what the perplexity was measured on")
    perplexity_tokens: int | None = None
    wall_time_s: float
    peak_memory_bytes: int | None = None
    peak_memory_device: str | None = None


class ServingHints(_Frozen):
    tgi_quantize: str | None = Field(default=None, description="value for TGI's --quantize, None for dense")
    vllm_quantization: str | None = Field(default=None, description="value for vLLM's --quantization, None for dense")
    dtype: str = "bfloat16"


class Manifest(_Frozen):
    """``comptrust.json``: what a checkpoint is, how it was made, and what was measured on it."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str = Field(description="a short name for tables, e.g. 'smollm2-135m-instruct-magnitude-s0.5'")
    base_model: BaseModelRef
    method: MethodSpec
    calibration: CalibrationSpec | None = None
    backend: BackendInfo
    measured: MeasuredFacts
    serving: ServingHints = ServingHints()
    created_at: str
    comptrust_version: str


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST_FILE
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(folder: Path) -> Manifest:
    """Read ``folder/comptrust.json``; a missing folder or manifest becomes a :class:`CheckpointError`."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}; pass a folder written by `compress`")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no {MANIFEST_FILE}; it is not a finished comptrust checkpoint "
            "(re-run `compress`, or serve it as a plain model folder)"
        )
    try:
        data = read_json(path, "checkpoint manifest")
    except ComptrustError as exc:
        raise CheckpointError(str(exc)) from exc
    check_schema_version(
        data.get("schema_version") if isinstance(data, dict) else None,
        MANIFEST_SCHEMA_VERSION,
        "checkpoint manifest",
        path,
    )
    try:
        return Manifest.model_validate(data)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint manifest {path} is invalid: {exc}") from exc
