"""Every bad input: a one-line message that says what to do, a non-zero exit, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from comptrust_compress import CompressConfig, compress
from comptrust_compress.cli import main
from comptrust_core import ConfigError, ModelNotFoundError


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def _assert_nothing_written(work: Path, before: set[str] | None = None) -> None:
    assert {p.name for p in work.iterdir()} == (before or set())


# (extra argv, message fragment); the model is the tiny local one unless the case names another.
FLAG_CASES = [
    (["--method", "quantize"], "unknown method 'quantize'; available methods: awq, dense, gptq, magnitude, rtn, "),
    (["--method", "gptq", "--sparsity", "0.5"], "--sparsity does not apply to method gptq"),
    (["--method", "awq", "--act-order"], "--act-order does not apply to method awq"),
    (["--method", "rtn", "--calib-data", "c4"], "--calib-data does not apply to method rtn"),
    (["--method", "wanda", "--sparsity", "0.5", "--bits", "4"], "--bits does not apply to method wanda"),
    (["--method", "sparsegpt"], "method sparsegpt needs a level: pass --sparsity F"),
    (["--method", "wanda", "--pattern", "2:4", "--sparsity", "0.3"], "--sparsity 0.3 conflicts with --pattern 2:4"),
    (
        ["--method", "gptq", "--group-size", "256"],
        "--group-size 256 is larger than layer model.layers.0.self_attn.q_proj (input width 64, and 13 more layer(s)); "
        "pass --group-size 64 or smaller, or -1 for per-channel",
    ),
    (
        ["--method", "awq", "--group-size", "32", "--calib-samples", "4", "--calib-seqlen", "100000"],
        "--calib-data shipped gives ",
    ),
    (["--method", "gptq", "--calib-data", "rows.csv"], "--calib-data 'rows.csv' is not a known source; pass shipped"),
    (["--method", "sparsegpt", "--pattern", "2:4", "--calib-data", "missing.txt"], "missing.txt: no such file"),
    (["--method", "magnitude", "--sparsity", "0.5", "--bits", "4"], "--bits does not apply to method magnitude"),
    (["--method", "magnitude", "--sparsity", "0.5", "--group-size", "64"], "--group-size does not apply"),
    (["--method", "magnitude", "--sparsity", "0.5", "--act-order"], "--act-order does not apply"),
    (["--method", "magnitude", "--sparsity", "0.5", "--no-act-order"], "--act-order does not apply"),
    (["--method", "magnitude", "--sparsity", "0.5", "--export", "compressed"], "--export does not apply"),
    (["--method", "magnitude", "--sparsity", "0.5", "--calib-data", "c4"], "--calib-data does not apply"),
    (
        ["--method", "magnitude", "--sparsity", "0.5", "--calib-samples", "8", "--calib-seed", "1"],
        "--calib-samples, --calib-seed do not apply to method magnitude",
    ),
    (["--method", "dense", "--sparsity", "0.5"], "--sparsity does not apply to method dense (it takes no method"),
    (["--method", "dense", "--pattern", "2:4"], "--pattern does not apply to method dense"),
    (["--method", "magnitude"], "method magnitude needs a level: pass --sparsity F"),
    (["--method", "magnitude", "--pattern", "unstructured"], "method magnitude needs a level"),
    (["--method", "magnitude", "--sparsity", "1.5"], "--sparsity 1.5 is out of range"),
    (["--method", "magnitude", "--sparsity", "0"], "--sparsity 0.0 is out of range"),
    (["--method", "magnitude", "--sparsity", "1"], "--sparsity 1.0 is out of range"),
    (["--method", "magnitude", "--sparsity", "-0.2"], "--sparsity -0.2 is out of range"),
    (["--method", "magnitude", "--sparsity", "nan"], "--sparsity nan is out of range"),
    (
        ["--method", "magnitude", "--pattern", "2:4", "--sparsity", "0.6"],
        "--sparsity 0.6 conflicts with --pattern 2:4, which implies sparsity 0.5; drop --sparsity",
    ),
    (["--method", "magnitude", "--pattern", "3:4"], "argument --pattern: invalid choice: '3:4'"),
    (["--method", "magnitude", "--sparsity", "0.5", "--bits", "5"], "argument --bits: invalid choice: 5"),
    (["--method", "magnitude", "--sparsity", "half"], "argument --sparsity: invalid float value: 'half'"),
    (["--method", "magnitude", "--sparsity", "0.5", "--group-size", "0"], "--group-size 0 is invalid"),
    (["--method", "magnitude", "--sparsity", "0.5", "--calib-samples", "0"], "--calib-samples 0 is too small"),
    (["--method", "magnitude", "--sparsity", "0.5", "--ppl-tokens", "3"], "--ppl-tokens 3 is too small"),
    (["--method", "magnitude", "--sparsity", "0.5", "--name", "a b"], "--name 'a b' is not a valid checkpoint name"),
    (["--method", "magnitude", "--sparsity", "0.5", "--device", "tpu"], "argument --device: invalid choice"),
]


@pytest.mark.parametrize(("extra", "message"), FLAG_CASES)
def test_bad_flags(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, work: Path, extra: list[str], message: str
) -> None:
    code, err = _run(capsys, ["--model", str(tiny_model), "--out", str(work / "ckpt"), *extra])
    assert code == 2
    assert err.startswith("compress: error: ")
    assert message in err
    assert err.count("\n") == 1
    _assert_nothing_written(work)


def test_missing_required_flag(capsys: pytest.CaptureFixture[str], work: Path) -> None:
    code, err = _run(capsys, ["--method", "dense", "--out", str(work / "ckpt")])
    assert code == 2
    assert "the following arguments are required: --model" in err
    assert err.count("\n") == 1
    _assert_nothing_written(work)


def test_out_exists(capsys: pytest.CaptureFixture[str], tiny_model: Path, work: Path) -> None:
    (work / "ckpt").mkdir()
    code, err = _run(capsys, ["--model", str(tiny_model), "--method", "dense", "--out", str(work / "ckpt")])
    assert code == 2
    assert "already exists; pass a new folder" in err
    _assert_nothing_written(work, {"ckpt"})
    assert not any((work / "ckpt").iterdir())


def test_out_under_a_file(capsys: pytest.CaptureFixture[str], tiny_model: Path, work: Path) -> None:
    (work / "file").write_text("x")
    code, err = _run(capsys, ["--model", str(tiny_model), "--method", "dense", "--out", str(work / "file" / "ckpt")])
    assert code == 2
    assert "is a file, not a folder" in err
    _assert_nothing_written(work, {"file"})


def _bin_only(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\0")
    return folder


def _no_config(folder: Path) -> Path:
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0")
    return folder


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("smollm3-tiny", "--model 'smollm3-tiny' is not a known alias, an existing folder, nor a Hugging Face id; "
         "pass an alias (smollm2-135m-instruct)"),
        ("./no/such/folder", "model folder './no/such/folder' does not exist"),
        ("comptrust-test/no-such-model", "is not in the local cache and the hub cannot be reached"),
        ("BIN", "has only PyTorch .bin weights; comptrust loads models from safetensors"),
        ("NOCONFIG", "has no config.json"),
        ("FILE", "is a file, not a model folder"),
    ],
)  # fmt: skip
def test_bad_model(capsys: pytest.CaptureFixture[str], tmp_path: Path, work: Path, model: str, message: str) -> None:
    if model == "BIN":
        model = str(_bin_only(tmp_path / "bin-only"))
    elif model == "NOCONFIG":
        model = str(_no_config(tmp_path / "no-config"))
    elif model == "FILE":
        (tmp_path / "weights.gguf").write_bytes(b"\0")
        model = str(tmp_path / "weights.gguf")
    code, err = _run(capsys, ["--model", model, "--method", "dense", "--out", str(work / "ckpt")])
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    _assert_nothing_written(work)


def test_model_errors_are_model_not_found(tmp_path: Path, work: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        compress(CompressConfig(model="nope", method="dense", out=work / "ckpt"))
    _assert_nothing_written(work)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_without_gpu(capsys: pytest.CaptureFixture[str], tiny_model: Path, work: Path) -> None:
    code, err = _run(
        capsys, ["--model", str(tiny_model), "--method", "dense", "--device", "cuda", "--out", str(work / "c")]
    )
    assert code == 2
    assert "--device cuda was asked for but no CUDA GPU is visible here; pass --device cpu" in err
    _assert_nothing_written(work)


@pytest.mark.parametrize("method", ["magnitude", "sparsegpt", "wanda"])
def test_pattern_on_indivisible_layers(odd_model: Path, work: Path, method: str) -> None:
    config = CompressConfig(model=str(odd_model), method=method, pattern="4:8", out=work / "c", ppl_tokens=64)
    with pytest.raises(ConfigError, match=r"--pattern 4:8 needs in_features divisible by 8, but model\.layers\.0"):
        compress(config)
    _assert_nothing_written(work)


def test_config_rejects_bad_values_on_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--bits 5 is not supported"):
        CompressConfig(model="m", method="gptq", out=tmp_path, bits=5)
    with pytest.raises(ConfigError, match="--pattern '3:4' is unknown"):
        CompressConfig(model="m", method="magnitude", out=tmp_path, pattern="3:4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--model is empty"):
        CompressConfig(model=" ", method="dense", out=tmp_path)
