"""Loading and writing Hugging Face model folders with plain transformers (safetensors only, chat template kept)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comptrust_core import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

__all__ = ["dtype_name", "is_compressed_tensors", "load_model", "load_tokenizer", "save_hf_folder", "storage_dtype"]

log = logging.getLogger(__name__)

_REMOTE_CODE_HINT = "trust_remote_code"


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def storage_dtype(folder: Path) -> torch.dtype:
    """The dtype a checkpoint of this model is written in: its own when 16-bit, else bfloat16."""
    import torch

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    declared = config.get("dtype") or config.get("torch_dtype") or text_config.get("dtype")
    return torch.float16 if declared == "float16" else torch.bfloat16


def _wrap_load_error(exc: Exception, what: str, folder: Path) -> Exception:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _REMOTE_CODE_HINT in str(exc):
        return ConfigError(
            f"{folder} needs custom model code to load its {what}; pass --trust-remote-code if you trust its source"
        )
    return ModelNotFoundError(f"cannot load the {what} from {folder}: {text}")


def is_compressed_tensors(folder: Path) -> bool:
    """True when ``folder``'s config.json declares a compressed-tensors quantization config."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    quant = config.get("quantization_config")
    return isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors"


def load_tokenizer(folder: Path, *, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise _wrap_load_error(exc, "tokenizer", folder) from exc


def load_model(folder: Path, *, dtype: torch.dtype, device: torch.device, trust_remote_code: bool) -> Any:
    """A causal LM from ``folder`` in ``dtype`` on ``device``, in eval mode."""
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if is_compressed_tensors(folder):
        from transformers import CompressedTensorsConfig

        # Decompress into dense Linear weights, so the weights can be measured as they will be computed with.
        extra["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder,
            **extra,
            dtype=dtype,
            device_map=str(device) if device.type != "cpu" else None,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise _wrap_load_error(exc, "model", folder) from exc
    model.eval()
    return model


def save_hf_folder(model: Any, tokenizer: Any, folder: Path, dtype: torch.dtype) -> None:
    """Write model (safetensors, ``dtype``, recorded in config.json), generation config and tokenizer to ``folder``.

    The chat template goes into tokenizer_config.json, where every server (TGI, vLLM, transformers) reads it.
    """
    model.to(dtype)
    model.config.dtype = dtype
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    if getattr(tokenizer, "chat_template", None):
        saved = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if not saved.get("chat_template"):
            raise RuntimeError(f"the chat template was not written to {folder / 'tokenizer_config.json'}")
    log.debug("wrote %s", ", ".join(sorted(p.name for p in folder.iterdir())))
