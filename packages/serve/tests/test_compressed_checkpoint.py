"""The embedded server on every kind of checkpoint ``compress`` writes, and the loader on a compressed-tensors one.

``test_serves_every_kind_compress_writes`` compresses the tiny random Llama with each method and export
``compress`` offers (on the CPU, 4 calibration windows of 32 tokens), serves it in-process with the embedded
server's loader, engine and app, and checks that ``/generate`` answers in TGI's schema with the same greedy tokens and
log-probabilities as plain transformers (``from_pretrained`` with no options) on that folder. Both decompress
compressed-tensors through the same library, so the loaded weights of every packed layer are also checked against the
stored integers, scales and (AWQ's) zero points, dequantized here independently: ``(q - zero_point) * scale``.
A checkpoint quantized by another tool (not compressed-tensors) is refused with a one-line error.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_core import ConfigError
from comptrust_serve.embedded.codec import Codec
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


CALIBRATION: dict[str, Any] = {"calib_samples": 4, "calib_seqlen": 32}
KINDS: dict[str, dict[str, Any]] = {
    "dense": {"method": "dense"},
    "magnitude-2of4": {"method": "magnitude", "pattern": "2:4"},
    "sparsegpt-s0.5": {"method": "sparsegpt", "sparsity": 0.5, **CALIBRATION},
    "wanda-2of4": {"method": "wanda", "pattern": "2:4", **CALIBRATION},
    "rtn-w4g32": {"method": "rtn", "bits": 4, "group_size": 32},
    "rtn-w4g32-fake-quant": {"method": "rtn", "bits": 4, "group_size": 32, "export": "fake-quant"},
    "gptq-w4g32": {"method": "gptq", "bits": 4, "group_size": 32, **CALIBRATION},
    "gptq-w4g32-fake-quant": {"method": "gptq", "bits": 4, "group_size": 32, "export": "fake-quant", **CALIBRATION},
    "awq-w4g32": {"method": "awq", "bits": 4, "group_size": 32, **CALIBRATION},
    "awq-w4g32-fake-quant": {"method": "awq", "bits": 4, "group_size": 32, "export": "fake-quant", **CALIBRATION},
}
PROMPT = "Hello world! How are you"
NEW_TOKENS = 8
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine, llm-compressor's many tiny ops (AWQ's grid search above all)
    run an order of magnitude faster than with threads contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _unpack(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """compressed-tensors' pack-quantized layout: 32 // bits unsigned values per int32 along ``dim``, lowest first."""
    per_word = 32 // bits
    moved = packed.movedim(dim, -1)
    shifts = torch.arange(per_word, dtype=torch.int32) * bits
    values = (moved.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return values.flatten(-2).movedim(-1, dim)


def _dequantized_from_disk(folder: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Every packed Linear's weight as ``(q - zero_point) * scale`` per group, from model.safetensors (float32), and
    how many of those Linears store a zero point other than the symmetric one.

    The stored integers are offset by ``2**(bits - 1)``; a symmetric scheme has no zero point, which is that offset.
    """
    from safetensors.torch import load_file

    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["format"] == "pack-quantized"
    (group,) = quant["config_groups"].values()
    bits, group_size = group["weights"]["num_bits"], group["weights"]["group_size"]
    stored = load_file(str(folder / "model.safetensors"))
    weights = {}
    shifted = 0
    for key in (k for k in stored if k.endswith(".weight_packed")):
        prefix = key.removesuffix(".weight_packed")
        rows, columns = stored[f"{prefix}.weight_shape"].tolist()
        ints = _unpack(stored[key], bits, 1)[:, :columns].to(torch.float32).reshape(rows, -1, group_size)
        scale = stored[f"{prefix}.weight_scale"].to(torch.float32)
        packed_zero = stored.get(f"{prefix}.weight_zero_point")
        zero = (
            torch.full_like(scale, 2 ** (bits - 1))
            if packed_zero is None
            else _unpack(packed_zero, bits, 0)[:rows].to(torch.float32)
        )
        shifted += bool((zero != 2 ** (bits - 1)).any())
        weights[prefix] = ((ints - zero.unsqueeze(-1)) * scale.unsqueeze(-1)).reshape(rows, columns)
    return weights, shifted


def _generate(url: str) -> dict[str, Any]:
    parameters = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "details": True, "decoder_input_details": True}
    body = json.dumps({"inputs": PROMPT, "parameters": parameters}).encode()
    request = urllib.request.Request(f"{url}/generate", data=body, headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=60) as response:
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.mark.parametrize("kind", list(KINDS))
def test_serves_every_kind_compress_writes(
    kind: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    serve_loaded: Callable[..., tuple[str, Any]],
    tgi_schema: Callable[[Any, str], None],
) -> None:
    pytest.importorskip("llmcompressor", reason="compress's quantizing and pruning methods need llm-compressor")
    from comptrust_compress import CompressConfig, compress
    from comptrust_core import read_manifest
    from transformers import AutoModelForCausalLM

    options = KINDS[kind]
    folder = compress(
        CompressConfig(model=str(tiny_checkpoint), out=tmp_path / kind, device="cpu", ppl_tokens=64, **options)
    )
    manifest = read_manifest(folder)
    export = manifest.method.export
    assert export == options.get("export", "compressed" if "bits" in options else "dense")
    quant = json.loads((folder / "config.json").read_text()).get("quantization_config")
    assert (quant is not None) == (export == "compressed")
    if quant is not None:  # AWQ is asymmetric (zero points stored), GPTQ and RTN symmetric
        (group,) = quant["config_groups"].values()
        assert group["weights"]["symmetric"] is (options["method"] != "awq")

    loaded = load_model(folder)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    if quant is not None:
        packed, shifted = _dequantized_from_disk(folder)
        assert len(packed) == 14  # 7 Linears in each of the 2 layers
        assert shifted == (14 if options["method"] == "awq" else 0)
        for name, weight in packed.items():
            torch.testing.assert_close(loaded.model.get_submodule(name).weight.detach(), weight, rtol=0, atol=0)
    if manifest.method.sparsity:
        served = loaded.model.model.layers[0].mlp.down_proj.weight
        assert (served == 0).float().mean().item() >= manifest.method.sparsity

    url, _ = serve_loaded(loaded, name=kind)
    answer = _generate(url)
    tgi_schema(answer, "GenerateResponse")
    details = answer["details"]
    prompt_ids = [token["id"] for token in details["prefill"]]
    served_ids = [token["id"] for token in details["tokens"]]
    assert 1 <= len(served_ids) <= NEW_TOKENS and details["generated_tokens"] == len(served_ids)

    plain: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    plain.eval()
    with torch.no_grad():
        reference = plain.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=loaded.pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
    reference_ids = reference.sequences[0, len(prompt_ids) :].tolist()
    assert served_ids == reference_ids, f"{kind}: the server's greedy tokens differ from transformers'"
    reference_logprobs = [
        torch.log_softmax(step[0].float(), dim=-1)[token].item()
        for step, token in zip(reference.logits, reference_ids, strict=True)
    ]
    assert [token["logprob"] for token in details["tokens"]] == pytest.approx(reference_logprobs, abs=1e-4)
    assert answer["generated_text"] == Codec(loaded.tokenizer).decode(served_ids)


def test_refuses_a_quantization_it_cannot_load(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A checkpoint quantized by another tool (AutoGPTQ's ``gptq`` format here) is a clear error, not a traceback."""
    folder = tmp_path / "autogptq"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"not 'gptq' ones; serve this checkpoint with TGI or vLLM"):
        load_model(folder)
