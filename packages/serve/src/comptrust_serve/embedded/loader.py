"""Loading a checkpoint folder into a tokenizer and a causal LM for the embedded server (safetensors only)."""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from comptrust_core import ConfigError
from comptrust_core.cpu_dtype import choose_cpu_dtype

from comptrust_serve.checkpoint import check_checkpoint_files

__all__ = ["DTYPES", "LoadedModel", "load_model", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    eos_ids: frozenset[int]
    pad_id: int
    max_positions: int | None
    load_seconds: float


def resolve_device(device: str | None) -> torch.device:
    """``None``/``cpu`` → CPU; ``cuda``/``cuda:N`` → that GPU (an error without one); ``auto`` → GPU when present."""
    name = (device or "cpu").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from exc


def resolve_dtype(dtype: str | None, device: torch.device, config_dtype: object) -> torch.dtype:
    """``None`` → float32 on CPU, bfloat16 on GPU; ``auto`` → the checkpoint's own dtype (on a CPU only where this
    CPU computes it fast, else float32); else the named dtype. On a CPU the decision is
    :func:`comptrust_core.cpu_dtype.choose_cpu_dtype`'s, logged when it falls back or warns."""
    if device.type == "cpu":
        choice = choose_cpu_dtype(dtype, config_dtype)
        choice.log("embedded server", logger)
        return DTYPES[choice.dtype]
    if dtype is None:
        return torch.bfloat16
    if dtype == "auto":
        if isinstance(config_dtype, torch.dtype):
            return config_dtype
        return DTYPES.get(str(config_dtype).removeprefix("torch."), torch.float32)
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))} or auto") from None


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    generation = getattr(model, "generation_config", None)
    for source in (getattr(generation, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return frozenset(ids)


def _quantization_options(config: Any, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` options for a quantized checkpoint: compressed-tensors (GPTQ/AWQ written by ``compress``).

    On the CPU the packed weights are dequantized once at load (plain dense matmuls afterwards); on a GPU
    transformers runs them compressed. Dense and fake-quant checkpoints need nothing.
    """
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if method is None:
        return {}
    if str(method) != "compressed-tensors":
        raise ConfigError(
            f"the embedded server loads dense and compressed-tensors checkpoints, not {method!r} ones; "
            "serve this checkpoint with TGI or vLLM"
        )
    if importlib.util.find_spec("compressed_tensors") is None:
        raise ConfigError(
            "this checkpoint is stored as compressed-tensors, which needs the compressed-tensors package; "
            "install comptrust-serve[embedded]"
        )
    if device.type != "cpu":
        return {}
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def load_model(
    path: Path, *, dtype: str | None = None, device: str | None = None, trust_remote_code: bool = False
) -> LoadedModel:
    """Load ``path`` (config.json + *.safetensors + tokenizer files) offline onto ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_checkpoint_files(path)
    started = time.perf_counter()
    where = resolve_device(device)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    torch_dtype = resolve_dtype(dtype, where, getattr(config, "dtype", None))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        path,
        **_quantization_options(config, where),
        dtype=torch_dtype,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
    )
    model.to(where)
    model.eval()
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = min(eos) if eos else 0
    max_positions = getattr(config, "max_position_embeddings", None)
    seconds = time.perf_counter() - started
    logger.info("loaded %s on %s as %s in %.1f s", path.name, where, str(torch_dtype).removeprefix("torch."), seconds)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=where,
        dtype=torch_dtype,
        eos_ids=eos,
        pad_id=int(pad),
        max_positions=int(max_positions) if isinstance(max_positions, int) else None,
        load_seconds=seconds,
    )
