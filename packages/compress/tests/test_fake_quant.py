"""``--export fake-quant`` and ``--export compressed`` are one model: the fake-quant checkpoint's dense weights are
bit for bit what dequantizing the compressed checkpoint gives (its stored integers, scales and zero points, in the
storage dtype), for rtn and gptq (symmetric) and awq (asymmetric: zero points), with per-layer group sizes (the
odd tiny Llama asked for groups of 32 gets 18 on its 36-wide projections and 24 on down_proj) and per channel.

The compressed checkpoint is dequantized here from model.safetensors: the packed integers are unpacked with
compressed-tensors' own ``unpack_from_int32``, then ``(q - zero_point) * scale`` per group is computed exactly in
float32 (a product of two bfloat16 values is exact there) and rounded once to the storage dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_compress import CompressConfig, compress
from comptrust_core import read_manifest
from safetensors.torch import load_file

CALIB: dict[str, Any] = {"calib_samples": 4, "calib_seqlen": 32, "calib_seed": 2}
CASES: dict[str, dict[str, Any]] = {
    "rtn-g32": {"method": "rtn", "group_size": 32},
    "gptq-g32": {"method": "gptq", "group_size": 32, **CALIB},
    "awq-g32": {"method": "awq", "group_size": 32, **CALIB},
    "rtn-channel": {"method": "rtn", "group_size": -1},
    "awq-channel": {"method": "awq", "group_size": -1, **CALIB},
}
_QUANT_SUFFIXES = (".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    """One intra-op thread: llm-compressor's many tiny ops run faster without threads contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dequantized(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int]]:
    """The compressed checkpoint's packed Linears dequantized in its storage dtype, its other tensors as stored, and
    the group size of each packed Linear."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["format"] == "pack-quantized"
    stored = load_file(str(folder / "model.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    for key in [k for k in stored if k.endswith(".weight_packed")]:
        prefix = key.removesuffix(".weight_packed")
        (args,) = [
            group["weights"]
            for group in quant["config_groups"].values()
            if any(_targets(target, prefix) for target in group["targets"])
        ]
        bits = args["num_bits"]
        assert args["strategy"] in ("group", "channel") and args["actorder"] in (None, "static")  # contiguous, no g_idx
        shape = stored[f"{prefix}.weight_shape"]
        rows, columns = shape.tolist()
        scale = stored[f"{prefix}.weight_scale"]
        groups = scale.shape[1]
        ints = unpack_from_int32(stored[key], bits, shape).to(torch.float32).reshape(rows, groups, -1)
        packed_zero = stored.get(f"{prefix}.weight_zero_point")
        assert (packed_zero is None) == args["symmetric"]
        zero = (
            torch.zeros(rows, groups)
            if packed_zero is None
            else unpack_from_int32(packed_zero, bits, torch.Size([rows, groups]), packed_dim=0).to(torch.float32)
        )
        exact = (ints - zero.unsqueeze(-1)) * scale.to(torch.float32).unsqueeze(-1)
        weights[f"{prefix}.weight"] = exact.reshape(rows, columns).to(scale.dtype)
        sizes[prefix] = -1 if args["strategy"] == "channel" else columns // groups
    others = {key: value for key, value in stored.items() if not key.endswith(_QUANT_SUFFIXES)}
    return weights, others, sizes


def _targets(target: str, name: str) -> bool:
    import re

    return re.fullmatch(target.removeprefix("re:"), name) is not None if target.startswith("re:") else target == name


@pytest.mark.parametrize("case", list(CASES))
def test_fake_quant_is_the_dequantized_compressed_checkpoint(case: str, odd_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("llmcompressor", reason="the quantizing methods need llm-compressor")
    settings: dict[str, Any] = {"bits": 4, **CASES[case]}
    method = settings["method"]
    folders = {
        export: compress(
            CompressConfig(
                model=str(odd_model), out=tmp_path / export, device="cpu", ppl_tokens=64, export=export, **settings
            )
        )
        for export in ("compressed", "fake-quant")
    }
    dequantized, others, sizes = _dequantized(folders["compressed"])
    assert len(dequantized) == 14  # 7 Linears in each of the 2 layers
    per_channel = settings["group_size"] == -1
    assert set(sizes.values()) == ({-1} if per_channel else {18, 24})
    assert read_manifest(folders["fake-quant"]).method.group_size_by_layer == ({} if per_channel else sizes)

    fake = load_file(str(folders["fake-quant"] / "model.safetensors"))
    assert set(fake) == set(dequantized) | set(others)
    differing = {}
    for name, weight in dequantized.items():
        assert (fake[name].dtype, fake[name].shape) == (weight.dtype, weight.shape), name
        bits_differ = int((fake[name].view(torch.int16) != weight.view(torch.int16)).sum())
        if bits_differ:
            differing[name] = bits_differ
    assert differing == {}, f"{method}: fake-quant weights differ from the dequantized compressed ones: {differing}"
    for name, tensor in others.items():
        assert fake[name].dtype == tensor.dtype and torch.equal(
            fake[name].view(torch.int16), tensor.view(torch.int16)
        ), name


def test_fake_quant_reaches_an_offloaded_module(tmp_path: Path) -> None:
    """On a GPU run llm-compressor leaves every module offloaded, so ``module.weight`` is a temporary onloaded copy:
    the fake-quant weight must be written back through the offload. Disk offloading, which also onloads a fresh copy
    on every access, stands in for the GPU here."""
    pytest.importorskip("llmcompressor", reason="the quantizing methods need llm-compressor")
    from compressed_tensors.offload.module import offload_module, remove_module_offload
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
    from compressed_tensors.quantization.lifecycle.initialize import initialize_module_for_quantization
    from comptrust_compress.methods._llmcompressor import fake_quantize_in_place

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 8, bias=False, dtype=torch.bfloat16)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)
    initialize_module_for_quantization(linear, QuantizationScheme(targets=["Linear"], weights=args))
    scale = linear.get_parameter("weight_scale")
    with torch.no_grad():
        scale.copy_(linear.weight.abs().reshape(8, 2, 32).amax(-1) / 7)
    original = linear.weight.detach().clone()
    ints = quantize(original, scale, None, args, dtype=torch.int8)
    expected = dequantize(ints, scale, None, args)
    assert expected.dtype == torch.bfloat16 and not torch.equal(expected, original)

    offload_module(linear, "cpu", "disk", offload_dir=str(tmp_path))
    assert linear.weight is not linear.weight  # every access onloads a new copy
    assert fake_quantize_in_place(torch.nn.Sequential(linear), torch.bfloat16) == 1
    remove_module_offload(linear, onload_tensors=True)
    assert list(dict(linear.named_parameters())) == ["weight"]  # scale and zero point gone
    assert torch.equal(linear.weight.view(torch.int16), expected.view(torch.int16))
    assert not hasattr(linear, "quantization_scheme")
