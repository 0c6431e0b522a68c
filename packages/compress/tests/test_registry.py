"""The method registry, method hooks that need no model, the CLI's flag mapping, and import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from comptrust_compress import (
    CompressConfig,
    CompressionMethod,
    VerificationError,
    available_methods,
    default_name,
    get_method,
    method_names,
    register_method,
)
from comptrust_compress.cli import build_parser, config_from_args
from comptrust_compress.methods import base
from comptrust_core import ConfigError, MeasuredFacts, MethodSpec


class _Unavailable(CompressionMethod):
    name = "needs-backend"
    summary = "a method whose backend is not installed"

    def unavailable_reason(self) -> str | None:
        return "llm-compressor is not installed"

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        return MethodSpec(name=self.name)

    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: Any, job: Any) -> None:
        return None


def test_builtin_methods() -> None:
    everything = ["awq", "dense", "gptq", "magnitude", "rtn", "sparsegpt", "wanda"]
    assert method_names() == everything
    assert available_methods() == everything
    assert get_method("magnitude").options == frozenset({"sparsity", "pattern"})
    assert get_method("dense").options == frozenset()


def test_unknown_and_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^unknown method 'owq'; available methods: awq, dense, gptq, magnitude, rtn, sparsegpt, wanda$",
    ):
        get_method("owq")
    monkeypatch.setitem(base._REGISTRY, _Unavailable.name, _Unavailable)
    assert "needs-backend" in method_names()
    assert "needs-backend" not in available_methods()
    with pytest.raises(
        ConfigError,
        match=r"^method 'needs-backend' is not available here \(llm-compressor is not installed\); "
        r"available methods: awq, dense, gptq, magnitude, rtn, sparsegpt, wanda$",
    ):
        get_method("needs-backend")


def test_double_registration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base._REGISTRY, _Unavailable.name, _Unavailable)
    register_method(_Unavailable)  # the same class again is fine
    clone = type("Clone", (_Unavailable,), {})
    with pytest.raises(ValueError, match="registered twice"):
        register_method(clone)


def _facts(before: float, after: float) -> MeasuredFacts:
    return MeasuredFacts(
        sparsity=0.0, effective_bits=16.0, perplexity_before=before, perplexity_after=after, wall_time_s=1.0
    )


def test_dense_verification(tmp_path: Path) -> None:
    dense = get_method("dense")
    config = CompressConfig(model="m", method="dense", out=tmp_path)
    dense.verify(_facts(10.0, 10.1), config)
    with pytest.raises(VerificationError, match=r"differs from the base model's 10\.000 by more than 2%"):
        dense.verify(_facts(10.0, 11.0), config)


def test_default_names(tmp_path: Path) -> None:
    magnitude = get_method("magnitude")

    def name(**kwargs: Any) -> str:
        return default_name("smollm2-135m-instruct", magnitude, CompressConfig(method="magnitude", **kwargs))

    assert name(model="m", out=tmp_path, pattern="2:4") == "smollm2-135m-instruct-magnitude-2of4"
    assert name(model="m", out=tmp_path, sparsity=0.5) == "smollm2-135m-instruct-magnitude-s0.5"
    assert name(model="m", out=tmp_path, sparsity=0.25, pattern="unstructured").endswith("-magnitude-s0.25")
    dense = get_method("dense")
    assert default_name("My Model (v2)", dense, CompressConfig(model="m", method="dense", out=tmp_path)) == (
        "My-Model-v2-dense"
    )


def test_every_flag_maps_to_the_config(tmp_path: Path) -> None:
    argv = ["--model", "m", "--method", "gptq", "--out", str(tmp_path / "o"), "--name", "n", "--bits", "4"]
    argv += ["--group-size", "64", "--no-act-order", "--sparsity", "0.5", "--pattern", "2:4", "--calib-data", "c4"]
    argv += ["--calib-samples", "16", "--calib-seqlen", "256", "--calib-seed", "3", "--export", "fake-quant"]
    argv += ["--device", "cpu", "--trust-remote-code", "--ppl-tokens", "100"]
    config = config_from_args(build_parser().parse_args(argv))
    assert config == CompressConfig(
        model="m",
        method="gptq",
        out=tmp_path / "o",
        name="n",
        bits=4,
        group_size=64,
        act_order=False,
        sparsity=0.5,
        pattern="2:4",
        calib_data="c4",
        calib_samples=16,
        calib_seqlen=256,
        calib_seed=3,
        export="fake-quant",
        device="cpu",
        trust_remote_code=True,
        ppl_tokens=100,
    )
    assert config.given_options() == (
        "bits",
        "group_size",
        "act_order",
        "sparsity",
        "pattern",
        "calib_data",
        "calib_samples",
        "calib_seqlen",
        "calib_seed",
        "export",
    )
    bare = config_from_args(build_parser().parse_args(["--model", "m", "--method", "dense", "--out", "o"]))
    assert bare.given_options() == ()
    assert bare.device is None and bare.trust_remote_code is False


def test_import_is_light() -> None:
    code = "import sys, comptrust_compress as c; c.available_methods(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
