"""The CPU dtype decision: capability and measurement mocked for both kinds of CPU, the cache, the flags, the probe."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from comptrust_core import ConfigError
from comptrust_core.cpu_dtype import (
    CACHE_FILE,
    PROBE_ROWS,
    CpuInfo,
    CpuProfile,
    Measure,
    choose_cpu_dtype,
    cpu_fingerprint,
    cpu_profile,
    cpu_summary,
    dtype_name,
    measure_profile,
    read_cpuinfo,
    store_profile,
    synthetic_profile,
)

# The kinds of CPU, as (bfloat16 hardware, bfloat16 speed relative to float32):
AMX = (True, 2.4)  # bfloat16 hardware, measured faster (a Sapphire Rapids-like CPU)
AVX2_ONLY = (False, 0.25)  # no bfloat16 hardware, emulated (an AMD Zen 2/3-like CPU: the 0.32x)
CAPPED = (True, 0.6)  # the hardware is there but torch is held below it (ONEDNN_MAX_CPU_ISA=AVX2): measured slow
AVX512_NO_BF16 = (False, 1.1)  # no hardware, yet one measurement came out faster: the flags still say float32


def _profile(bfloat16: tuple[bool | None, float], float16: tuple[bool | None, float] = (False, 0.1)) -> CpuProfile:
    return synthetic_profile(bfloat16=bfloat16, float16=float16, cpu="Test CPU", capability="AVX2")


def _never() -> CpuProfile:
    raise AssertionError("the profile was not needed for this decision, yet it was asked for")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(AMX, "bfloat16"), (AVX2_ONLY, "float32"), (CAPPED, "float32"), (AVX512_NO_BF16, "float32")],
)
def test_auto_keeps_the_checkpoints_dtype_only_where_the_cpu_computes_it_fast(
    kind: tuple[bool, float], expected: str
) -> None:
    choice = choose_cpu_dtype("auto", "bfloat16", lambda: _profile(kind))
    assert choice.dtype == expected
    assert choice.warning is None
    if expected == "float32":
        assert choice.note is not None
        assert "not the checkpoint's bfloat16" in choice.note and "Test CPU" in choice.note
        assert f"{kind[1]:.2f}x float32's speed" in choice.note and "--dtype bfloat16" in choice.note
    else:
        assert choice.note is None


def test_auto_on_a_cpu_without_bf16_hardware_names_the_missing_hardware() -> None:
    note = choose_cpu_dtype("auto", "torch.bfloat16", lambda: _profile(AVX2_ONLY)).note
    assert note is not None and "no bfloat16 hardware" in note and "capability AVX2" in note


def test_auto_reads_torch_dtypes_and_float16_checkpoints() -> None:
    torch = pytest.importorskip("torch")
    assert choose_cpu_dtype("auto", torch.bfloat16, lambda: _profile(AMX)).dtype == "bfloat16"
    fp16_fast = _profile(AVX2_ONLY, float16=(True, 1.5))
    assert choose_cpu_dtype("auto", "float16", lambda: fp16_fast).dtype == "float16"
    assert choose_cpu_dtype("auto", "float16", lambda: _profile(AMX)).dtype == "float32"


def test_an_explicit_16_bit_dtype_is_obeyed_with_the_measured_slowdown_named() -> None:
    slow = choose_cpu_dtype("bfloat16", "bfloat16", lambda: _profile(AVX2_ONLY))
    assert slow.dtype == "bfloat16" and slow.note is None
    assert slow.warning is not None and "about 4.0x slower than float32" in slow.warning
    assert "--dtype float32 or auto" in slow.warning
    fast = choose_cpu_dtype("bf16", "float32", lambda: _profile(AMX))
    assert fast.dtype == "bfloat16" and fast.warning is None and fast.note is None


def test_decisions_that_need_no_measurement_never_ask_for_one() -> None:
    assert choose_cpu_dtype(None, "bfloat16", _never).dtype == "float32"  # the CPU default
    assert choose_cpu_dtype("float32", "bfloat16", _never).dtype == "float32"
    assert choose_cpu_dtype("auto", "float32", _never).dtype == "float32"
    assert choose_cpu_dtype("auto", None, _never).dtype == "float32"  # a config that declares none


def test_an_unknown_dtype_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown dtype 'int4'.*bfloat16.*or auto"):
        choose_cpu_dtype("int4", "bfloat16", _never)


def test_dtype_names() -> None:
    assert [dtype_name(x) for x in ("bf16", "torch.float16", "FP32", "half", None, "int8")] == [
        "bfloat16",
        "float16",
        "float32",
        "float16",
        None,
        None,
    ]


def test_the_choice_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        choose_cpu_dtype("auto", "bfloat16", lambda: _profile(AVX2_ONLY)).log("ckpt")
        choose_cpu_dtype("bfloat16", "bfloat16", lambda: _profile(AVX2_ONLY)).log("ckpt")
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("INFO", "ckpt"),
        ("WARNING", "ckpt"),
    ]


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma
"""
SPR_FLAGS = "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile avx512_fp16 amx_fp16"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd fphp asimdhp bf16 sve\nCPU part\t: 0xd40\n"


def test_cpuinfo_and_the_hardware_its_flags_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from comptrust_core import cpu_dtype

    x86 = tmp_path / "x86"
    x86.write_text(X86_CPUINFO)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    info = read_cpuinfo(x86)
    assert info.model == "AMD EPYC 7B13 64-Core Processor" and "avx2" in info.flags
    assert cpu_dtype._hardware_from_flags(info) == {"bfloat16": False, "float16": False}
    spr = CpuInfo("Xeon", "x86_64", frozenset(SPR_FLAGS.split()))
    assert cpu_dtype._hardware_from_flags(spr) == {"bfloat16": True, "float16": True}
    arm = tmp_path / "arm"
    arm.write_text(ARM_CPUINFO)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert cpu_dtype._hardware_from_flags(read_cpuinfo(arm)) == {"bfloat16": True, "float16": True}
    bare = CpuInfo("mystery", "riscv64", frozenset())
    assert cpu_dtype._hardware_from_flags(bare) == {"bfloat16": None, "float16": None}  # unknown, not "no"


def test_unknown_hardware_leaves_the_decision_to_the_measurement() -> None:
    assert choose_cpu_dtype("auto", "bfloat16", lambda: _profile((None, 1.3))).dtype == "bfloat16"
    assert choose_cpu_dtype("auto", "bfloat16", lambda: _profile((None, 0.7))).dtype == "float32"


def _fake_measure(ratio: float, calls: list[int]) -> Measure:
    def measure() -> tuple[dict[str, dict[str, float]], str, dict[str, bool | None]]:
        calls.append(1)
        rows = {str(r): ratio for r in PROBE_ROWS}
        return {"bfloat16": rows, "float16": rows}, "AVX2", {"bfloat16": False, "float16": False}

    return measure


def test_the_measurement_is_taken_once_per_machine_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    measure = _fake_measure(0.3, calls)
    first = cpu_profile(measure=measure)
    again = cpu_profile(measure=measure)
    assert calls == [1] and first == again and first.speed == {"bfloat16": 0.3, "float16": 0.3}
    cached = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
    assert list(cached["profiles"]) == [first.fingerprint] and cached["version"] == 1

    # another machine (another CPU, or torch held to another ISA) is measured on its own, beside the first
    other = CpuInfo("Other CPU", "x86_64", frozenset({"avx2"}))
    cpu_profile(measure=measure, info=other)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = cpu_profile(measure=measure)
    assert len(calls) == 3 and capped.fingerprint != first.fingerprint
    assert len(json.loads((tmp_path / "cache" / CACHE_FILE).read_text())["profiles"]) == 3

    cpu_profile(measure=measure, remeasure=True)
    assert len(calls) == 4


def test_a_damaged_cache_is_measured_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path))
    calls: list[int] = []
    (tmp_path / CACHE_FILE).write_text("{not json")
    cpu_profile(measure=_fake_measure(0.5, calls))
    (tmp_path / CACHE_FILE).write_text(json.dumps({"version": 1, "profiles": {cpu_fingerprint(): {"cpu": 3}}}))
    profile = cpu_profile(measure=_fake_measure(0.5, calls))
    assert len(calls) == 2 and profile.speed["bfloat16"] == 0.5


def test_a_stored_synthetic_profile_forces_the_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path))
    store_profile(_profile(AMX))
    assert choose_cpu_dtype("auto", "bfloat16").dtype == "bfloat16"
    store_profile(_profile(AVX2_ONLY))
    assert choose_cpu_dtype("auto", "bfloat16").dtype == "float32"


def test_the_real_probe_measures_every_shape() -> None:
    pytest.importorskip("torch")
    from comptrust_core.cpu_dtype import measure_speeds

    speeds = measure_speeds(rounds=1, budget_s=0.002)
    assert set(speeds) == {"bfloat16", "float16"}
    for rows in speeds.values():
        assert set(rows) == {str(r) for r in PROBE_ROWS} and all(v > 0 for v in rows.values())
    profile = measure_profile(lambda: (speeds, "AVX2", {"bfloat16": False, "float16": None}))
    assert profile.speed["bfloat16"] > 0 and profile.hardware["float16"] is None
    assert profile.cpu in cpu_summary()
