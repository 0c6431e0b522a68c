"""The shared layer-by-layer driver: find the decoder layers, visit them one at a time on the work device.

Only the ``torch.nn.Linear`` modules inside the decoder layers are compressible; embeddings, the LM head and norms
are left as they are. Visiting one layer at a time keeps device memory at one layer's worth when the model sits on
the CPU and the work runs on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from comptrust_core import ConfigError

__all__ = ["compressible_linears", "decoder_layers", "for_each_layer", "layer_linears", "layer_widths"]

log = logging.getLogger(__name__)


def decoder_layers(model: Any) -> list[tuple[str, torch.nn.Module]]:
    """The decoder layers of a transformers causal LM as ``(qualified name, module)``, in order."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    count = getattr(text_config, "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and (count is None or len(module) == count) and len(module) > 0
    ]
    preferred = [c for c in candidates if c[0].rsplit(".", 1)[-1] in ("layers", "h", "blocks")]
    chosen = (preferred or candidates)[:1]
    if not chosen:
        raise ConfigError(
            f"cannot find the decoder layers of this {type(model).__name__} (no list of {count} layers); "
            "pass a standard transformers causal LM"
        )
    list_name, layers = chosen[0]
    return [(f"{list_name}.{i}", layer) for i, layer in enumerate(layers)]


def layer_linears(prefix: str, layer: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear modules of one layer, keyed by their qualified name in the model."""
    return {f"{prefix}.{name}": m for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}


def compressible_linears(model: Any) -> dict[str, torch.nn.Linear]:
    """Every Linear module of every decoder layer, keyed by qualified module name, in model order."""
    found: dict[str, torch.nn.Linear] = {}
    for prefix, layer in decoder_layers(model):
        found.update(layer_linears(prefix, layer))
    if not found:
        raise ConfigError(f"this {type(model).__name__} has no Linear layers in its decoder layers to compress")
    return found


def for_each_layer(
    model: Any, device: torch.device, step: Callable[[str, torch.nn.Module, dict[str, torch.nn.Linear]], None]
) -> None:
    """Call ``step(layer name, layer, its linears)`` for each decoder layer, the layer moved to ``device`` meanwhile.

    The layer goes back to where it was afterwards, also when ``step`` raises.
    """
    layers = decoder_layers(model)
    for index, (prefix, layer) in enumerate(layers):
        home = next(layer.parameters()).device
        layer.to(device)
        try:
            step(prefix, layer, layer_linears(prefix, layer))
        finally:
            layer.to(home)
        log.debug("layer %d/%d done (%s)", index + 1, len(layers), prefix)


def layer_widths(folder: Path, *, trust_remote_code: bool) -> dict[str, tuple[int, int]]:
    """``(out_features, in_features)`` of every compressible Linear, from ``config.json`` alone (no weights read).

    The model is built on the meta device, so this is instant even for a 70B model.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)  # type: ignore[no-untyped-call]
    return {name: (lin.out_features, lin.in_features) for name, lin in compressible_linears(model).items()}
