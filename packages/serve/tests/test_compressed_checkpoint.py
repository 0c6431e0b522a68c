"""The embedded loader on a compressed-tensors checkpoint (4-bit groups, as ``compress --method gptq`` writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_serve.embedded.loader import load_model
from comptrust_serve.testing import build_tiny_checkpoint


def _compressed_checkpoint(folder: Path) -> Path:
    """Round-to-nearest 4-bit, groups of 32, saved as compressed-tensors by llm-compressor (no calibration data)."""
    pytest.importorskip("llmcompressor", reason="writing the checkpoint needs llm-compressor (comptrust-compress)")
    from llmcompressor.entrypoints.oneshot import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dense = build_tiny_checkpoint(folder.parent / "dense")
    model: Any = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(dense)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
    groups = {"group_0": {"targets": [r"re:.*layers\.\d+\..*_proj$"], "weights": weights}}
    oneshot(model=model, tokenizer=tokenizer, recipe=QuantizationModifier(config_groups=groups), pipeline="datafree")
    model.to(torch.bfloat16)
    model.save_pretrained(folder, save_compressed=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_loads_a_compressed_tensors_checkpoint(tmp_path: Path) -> None:
    folder = _compressed_checkpoint(tmp_path / "w4")
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["quant_method"] == (
        "compressed-tensors"
    )
    loaded = load_model(folder)
    q_proj = loaded.model.model.layers[0].self_attn.q_proj
    weight = q_proj.weight.detach()
    assert weight.shape == (64, 64) and weight.dtype == torch.float32
    groups = weight.reshape(64, 2, 32)
    assert max(len(torch.unique(row)) for row in groups.reshape(-1, 32)) <= 16  # really 4-bit levels per group
    prompt = loaded.tokenizer("hello there", return_tensors="pt")
    out = loaded.model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=loaded.pad_id)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 3
