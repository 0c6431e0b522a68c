"""End to end on a tiny random Llama: the written checkpoint, its manifest, and atomicity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_compress import CompressConfig, VerificationError, compress
from comptrust_compress._fs import weights_hash
from comptrust_compress.cli import main
from comptrust_compress.methods.magnitude import MagnitudePruning
from comptrust_core import read_manifest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
LINEARS += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
EXPECTED_LAYERS = [f"model.layers.{i}.{name}" for i in range(2) for name in LINEARS]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _run(tiny_model: Path, out: Path, method: str, **kwargs: Any) -> Path:
    return compress(CompressConfig(model=str(tiny_model), method=method, out=out, ppl_tokens=256, **kwargs))


def test_magnitude_unstructured(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "ckpt", "magnitude", sparsity=0.5)
    assert out == work / "ckpt"
    assert sorted(p.name for p in work.iterdir()) == ["ckpt"]
    manifest = read_manifest(out)
    assert manifest.name == "tiny-llama-magnitude-s0.5"
    assert manifest.base_model.kind == "local"
    assert manifest.base_model.source == str(tiny_model)
    assert manifest.base_model.content_hash == weights_hash(tiny_model)
    assert manifest.method.name == "magnitude"
    assert manifest.method.sparsity == 0.5
    assert manifest.method.pattern == "unstructured"
    assert manifest.method.export == "dense"
    assert manifest.method.bits is None
    assert manifest.calibration is None
    assert manifest.backend.name == "comptrust"
    assert manifest.backend.device == "cpu"
    assert manifest.serving.tgi_quantize is None and manifest.serving.vllm_quantization is None
    assert manifest.serving.dtype == "bfloat16"

    facts = manifest.measured
    assert list(facts.layers) == EXPECTED_LAYERS
    weights, base = _weights(out), _weights(tiny_model)
    total = zeros = 0
    for name, stats in facts.layers.items():
        w = weights[f"{name}.weight"]
        assert stats.numel == w.numel()
        assert stats.zeros == int((w == 0).sum()) == int(w.numel() * 0.5)
        assert stats.sparsity == pytest.approx(stats.zeros / stats.numel)
        assert stats.nm_holds is None
        total, zeros = total + stats.numel, zeros + stats.zeros
    assert facts.sparsity == pytest.approx(zeros / total)
    assert facts.nm_pattern_holds is None
    assert facts.effective_bits == 16.0
    # untouched: embeddings (tied LM head) and norms
    for key in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert torch.equal(weights[key], base[key])
    assert facts.perplexity_before is not None and facts.perplexity_before > 1
    assert facts.perplexity_after is not None and facts.perplexity_after > 1
    assert facts.perplexity_tokens == 256
    assert facts.perplexity_text is not None and facts.perplexity_text.startswith("comptrust:heldout.txt (sha256:")
    assert facts.wall_time_s > 0
    assert facts.peak_memory_bytes is not None and facts.peak_memory_bytes > 0
    assert facts.peak_memory_device is not None and facts.peak_memory_device.startswith("cpu")


@pytest.mark.parametrize(("pattern", "n", "m"), [("2:4", 2, 4), ("4:8", 4, 8), ("1:2", 1, 2)])
def test_magnitude_nm(tiny_model: Path, work: Path, pattern: str, n: int, m: int) -> None:
    out = _run(tiny_model, work / "ckpt", "magnitude", pattern=pattern)
    manifest = read_manifest(out)
    assert manifest.name == f"tiny-llama-magnitude-{n}of{m}"
    assert manifest.method.pattern == pattern
    assert manifest.method.sparsity == pytest.approx((m - n) / m)
    assert manifest.measured.nm_pattern_holds is True
    assert manifest.measured.sparsity == pytest.approx((m - n) / m)
    weights = _weights(out)
    for name in EXPECTED_LAYERS:
        assert manifest.measured.layers[name].nm_holds is True
        w = weights[f"{name}.weight"]
        for row in w.tolist():
            for start in range(0, len(row), m):
                assert sum(1 for v in row[start : start + m] if v != 0) <= n


def test_pattern_with_matching_sparsity_is_fine(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "ckpt", "magnitude", pattern="2:4", sparsity=0.5, name="my-2of4")
    assert read_manifest(out).name == "my-2of4"


def test_dense_is_a_checkpoint_like_any_other(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "ckpt", "dense")
    manifest = read_manifest(out)
    assert manifest.name == "tiny-llama-dense"
    assert manifest.method.name == "dense"
    assert manifest.method.sparsity is None and manifest.method.pattern is None
    assert manifest.measured.sparsity < 0.01
    assert manifest.measured.effective_bits == 16.0
    assert manifest.measured.perplexity_after == pytest.approx(manifest.measured.perplexity_before, rel=1e-4)
    base = _weights(tiny_model)
    assert all(torch.equal(tensor, base[key]) for key, tensor in _weights(out).items())


def test_checkpoint_loads_with_plain_transformers(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "ckpt", "magnitude", pattern="2:4")
    model: Any = AutoModelForCausalLM.from_pretrained(out)
    tokenizer: Any = AutoTokenizer.from_pretrained(out)
    template = AutoTokenizer.from_pretrained(tiny_model).chat_template
    assert template and "<|im_start|>" in template
    assert tokenizer.chat_template == template
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4 or generated[0, -1] == tokenizer.eos_token_id
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by a server run as another user


def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("injected failure")


def _interrupt_after_config(self: Any, model: Any, tokenizer: Any, folder: Path, *args: Any) -> None:
    (folder / "config.json").write_text("{}")
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "case",
    [
        ("comptrust_compress.pipeline.write_manifest", _boom, RuntimeError),
        ("comptrust_compress.methods.base.CompressionMethod.save", _interrupt_after_config, KeyboardInterrupt),
        ("comptrust_compress.pipeline.publish_dir", _boom, RuntimeError),
    ],
)
def test_failure_mid_write_leaves_nothing(
    tiny_model: Path, work: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str, Any, type[BaseException]]
) -> None:
    target, replacement, error = case
    monkeypatch.setattr(target, replacement)
    with pytest.raises(error):
        _run(tiny_model, work / "ckpt", "magnitude", sparsity=0.5)
    assert list(work.iterdir()) == []


def test_method_that_did_nothing_fails_loudly(
    tiny_model: Path, work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(MagnitudePruning, "apply", lambda self, *args: None)
    with pytest.raises(VerificationError, match=r"magnitude was asked for sparsity 0\.5 but model\.layers\.0\."):
        _run(tiny_model, work / "ckpt", "magnitude", sparsity=0.5)
    assert list(work.iterdir()) == []
    argv = ["--model", str(tiny_model), "--method", "magnitude", "--pattern", "2:4", "--ppl-tokens", "64"]
    code = main([*argv, "--out", str(work / "c")])
    assert code == 3
    assert "magnitude was asked for sparsity 0.5" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_cli_success_prints_the_path(tiny_model: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model", str(tiny_model), "--method", "magnitude", "--sparsity", "0.25", "--out", str(work / "c")]
    assert main([*argv, "--ppl-tokens", "64", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(work / "c")
    assert read_manifest(work / "c").measured.perplexity_tokens == 64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible here")
def test_magnitude_on_cuda(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "ckpt", "magnitude", pattern="2:4", device="cuda")
    manifest = read_manifest(out)
    assert manifest.backend.device.startswith("cuda:")
    assert manifest.measured.peak_memory_device is not None and manifest.measured.peak_memory_device.startswith("cuda:")
    assert manifest.measured.peak_memory_bytes is not None and manifest.measured.peak_memory_bytes > 0
    assert manifest.measured.nm_pattern_holds is True
