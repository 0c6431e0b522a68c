"""gptq, awq, rtn, sparsegpt and wanda through llm-compressor on tiny random Llamas: checkpoints, manifests, checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_compress import CompressConfig, VerificationError, compress
from comptrust_compress.cli import main
from comptrust_compress.methods import _llmcompressor
from comptrust_core import read_manifest
from safetensors import safe_open
from transformers import AutoModelForCausalLM

CALIB: dict[str, Any] = {"calib_samples": 4, "calib_seqlen": 32}


def _run(model: Path, out: Path, method: str, **kwargs: Any) -> Path:
    return compress(CompressConfig(model=str(model), method=method, out=out, ppl_tokens=128, device="cpu", **kwargs))


def _stored(folder: Path) -> dict[str, str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {key: str(fh.get_slice(key).get_dtype()) for key in fh.keys()}  # noqa: SIM118


def test_gptq_compressed_with_per_layer_group_sizes(odd_model: Path, work: Path) -> None:
    # hidden 36, intermediate 72: asked 32, q/k/v/o/gate/up (input 36) get 18, down_proj (input 72) gets 24.
    out = _run(odd_model, work / "gptq", "gptq", bits=4, group_size=32, calib_seed=1, **CALIB)
    manifest = read_manifest(out)
    method = manifest.method
    assert (method.name, method.bits, method.group_size, method.act_order, method.export) == (
        "gptq",
        4,
        32,
        True,
        "compressed",
    )
    assert set(method.group_size_by_layer.values()) == {18, 24}
    assert len(method.group_size_by_layer) == 14
    assert method.group_size_by_layer["model.layers.0.mlp.down_proj"] == 24
    assert manifest.calibration is not None
    assert (manifest.calibration.samples, manifest.calibration.seqlen, manifest.calibration.seed) == (4, 32, 1)
    assert manifest.calibration.content_hash is not None
    measured = manifest.measured
    assert measured.quant_levels_max is not None and measured.quant_levels_max <= 16
    assert 4 < measured.effective_bits < 6  # packed 4-bit plus bfloat16 scales and zero points per group
    assert manifest.serving.tgi_quantize == manifest.serving.vllm_quantization == "compressed-tensors"
    assert manifest.backend.name == "llm-compressor" and "llmcompressor 0.14.0.1" in manifest.backend.version
    assert measured.perplexity_after is not None and measured.perplexity_after < 2 * measured.perplexity_before  # type: ignore[operator]

    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    sizes = sorted(group["weights"]["group_size"] for group in quant["config_groups"].values())
    assert sizes == [18, 24]
    stored = _stored(out)
    assert stored["model.layers.0.self_attn.q_proj.weight_packed"] == "I32"
    assert "model.layers.0.self_attn.q_proj.weight" not in stored
    model: Any = AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 2, 3]])).logits.isfinite().all()


def test_gptq_fake_quant_is_dense(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "fq", "gptq", bits=3, group_size=32, export="fake-quant", act_order=False, **CALIB)
    manifest = read_manifest(out)
    assert manifest.method.export == "fake-quant" and manifest.method.act_order is False
    assert manifest.method.group_size_by_layer == {}  # 64 and 128 are multiples of 32
    assert manifest.serving.tgi_quantize is None and manifest.serving.vllm_quantization is None
    assert manifest.measured.effective_bits == 16.0
    assert manifest.measured.quant_levels_max is not None and manifest.measured.quant_levels_max <= 8
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert _stored(out)["model.layers.0.self_attn.q_proj.weight"] == "BF16"


def test_awq_on_the_cpu_restores_pin_memory(tiny_model: Path, work: Path) -> None:
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    out = _run(tiny_model, work / "awq", "awq", bits=4, group_size=32, **CALIB)
    assert IntermediatesCache.pin_memory is original
    manifest = read_manifest(out)
    assert manifest.method.extra["symmetric"] is False
    assert manifest.measured.quant_levels_max is not None and manifest.measured.quant_levels_max <= 16
    assert "weight_zero_point" in " ".join(_stored(out))


def test_pin_memory_bypass_is_cpu_only() -> None:
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    with _llmcompressor._no_pin_memory_without_cuda(torch.device("cpu")):
        assert IntermediatesCache.pin_memory is not original
        IntermediatesCache.pin_memory(object(), 0)  # type: ignore[arg-type]  # a no-op: no CUDA driver needed
    assert IntermediatesCache.pin_memory is original
    with _llmcompressor._no_pin_memory_without_cuda(torch.device("cuda")):
        assert IntermediatesCache.pin_memory is original


def test_work_device_is_the_one_asked_for() -> None:
    from llmcompressor.pipelines.sequential import pipeline as sequential

    original = getattr(sequential, "get_main_device")  # noqa: B009
    with _llmcompressor._work_device(torch.device("cpu")):
        assert getattr(sequential, "get_main_device")() == torch.device("cpu")  # noqa: B009
    assert getattr(sequential, "get_main_device") is original  # noqa: B009


def test_rtn_needs_no_calibration(tiny_model: Path, work: Path) -> None:
    out = _run(tiny_model, work / "rtn", "rtn", bits=8, group_size=64)
    manifest = read_manifest(out)
    assert manifest.calibration is None
    assert manifest.measured.quant_levels_max is not None and manifest.measured.quant_levels_max <= 256
    assert 8 < manifest.measured.effective_bits < 9


@pytest.mark.parametrize(("method", "level"), [("sparsegpt", {"pattern": "2:4"}), ("wanda", {"sparsity": 0.5})])
def test_pruning(tiny_model: Path, work: Path, method: str, level: dict[str, Any]) -> None:
    out = _run(tiny_model, work / method, method, **level, **CALIB)
    manifest = read_manifest(out)
    assert manifest.method.sparsity == 0.5 and manifest.method.export == "dense"
    assert manifest.measured.sparsity == pytest.approx(0.5, abs=1e-6)
    assert all(s.sparsity >= 0.5 for s in manifest.measured.layers.values())
    assert manifest.measured.nm_pattern_holds is (True if "pattern" in level else None)
    assert manifest.serving.tgi_quantize is None
    assert manifest.calibration is not None and manifest.calibration.samples == 4
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert _stored(out)["model.embed_tokens.weight"] == "BF16"


@pytest.mark.parametrize(
    "case",
    [
        ("gptq", {"bits": 4, "group_size": 32}, r"gptq was asked for 4-bit weights but a quantization group"),
        ("wanda", {"pattern": "2:4"}, r"wanda was asked for sparsity 0\.5 but model\.layers\.0\."),
    ],
)
def test_a_backend_that_did_nothing_fails_loudly(
    tiny_model: Path,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, dict[str, Any], str],
) -> None:
    method, level, message = case
    monkeypatch.setattr(_llmcompressor, "run_oneshot", lambda *args: None)
    with pytest.raises(VerificationError, match=message):
        _run(tiny_model, work / "c", method, **level, **CALIB)
    assert list(work.iterdir()) == []
    argv = ["--model", str(tiny_model), "--method", method, "--out", str(work / "c"), "--ppl-tokens", "64"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in level.items()] + ["--calib-samples=4", "--calib-seqlen=32"]
    assert main(argv) == 3
    assert "nothing was written" in capsys.readouterr().err
    assert list(work.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible here")
def test_gptq_on_cuda_records_the_compression_peak(tiny_model: Path, work: Path) -> None:
    out = compress(
        CompressConfig(
            model=str(tiny_model), method="gptq", out=work / "g", group_size=32, device="cuda", ppl_tokens=128, **CALIB
        )
    )
    measured = read_manifest(out).measured
    assert measured.peak_memory_device is not None and measured.peak_memory_device.startswith("cuda:")
    assert measured.peak_memory_device.endswith("(compression)")
    assert measured.peak_memory_bytes is not None and measured.peak_memory_bytes > 0
