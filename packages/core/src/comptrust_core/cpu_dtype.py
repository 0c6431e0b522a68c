"""Which dtype a model computes in on a CPU: the one place that decides, for every part of comptrust that runs a
model on a CPU (the embedded server, vLLM's CPU build through the process launcher, compression, the benchmarks).

A 16-bit dtype is fast on a CPU only where the CPU has the hardware for it: bfloat16 needs AVX512_BF16 or AMX on
x86 (the ``bf16`` feature on Arm), float16 needs AVX512_FP16 or AMX-FP16 (``fphp`` on Arm). Elsewhere torch emulates
it: a decoder's matmuls ran 3-10x slower than in float32 on an AVX2-only CPU and on an AVX-512 one without BF16, and
the embedded server answered the quick suite 1.4-4x slower. So:

- a 16-bit dtype counts as *fast* when torch reports the hardware for it (:func:`torch.cpu` on x86; the CPU's
  features elsewhere) **and** a short measurement confirms it: the matmuls of one decoder MLP computed in that dtype
  at least as fast as in float32 (:data:`FAST_RATIO`), at 1, 16 and 256 rows (decoding alone, a batch, a prefill),
  geometric mean. The measurement takes about two seconds, once per machine: it is cached in
  ``cache_dir()/cpu-dtype.json`` under a fingerprint of the CPU (model and flags), the threads, torch's version and
  the variables that cap torch's instruction set (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``);
- :func:`choose_cpu_dtype` turns a request into a dtype: ``None`` is float32 (the CPU default, measured nothing);
  ``auto`` is the checkpoint's own dtype where that is fast, else float32 with a note saying why; an explicit
  ``bfloat16``/``float16`` is obeyed, with a warning naming the measured slowdown where it is slow.

Compression asks for the default (``None``, float32) on purpose: a checkpoint's measured facts (perplexity, the
solvers' Hessians) must not depend on which CPU wrote it.

Only the measurement imports torch (lazily): this module is part of comptrust-core, which installs without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from comptrust_core._io import atomic_write_text
from comptrust_core.errors import ConfigError
from comptrust_core.paths import cache_dir

__all__ = [
    "CACHE_FILE",
    "FAST_RATIO",
    "PROBE_ROWS",
    "CpuInfo",
    "CpuProfile",
    "DtypeChoice",
    "Measure",
    "choose_cpu_dtype",
    "cpu_fingerprint",
    "cpu_profile",
    "cpu_summary",
    "dtype_name",
    "measure_profile",
    "read_cpuinfo",
    "store_profile",
    "synthetic_profile",
]

logger = logging.getLogger(__name__)

CACHE_FILE = "cpu-dtype.json"
CACHE_VERSION = 1

FAST_RATIO = 1.0
"""A 16-bit dtype counts as fast when its measured speed is at least this fraction of float32's."""

PROBE_ROWS = (1, 16, 256)
"""Rows of the probe's matmuls: one sequence decoding, a batch of 16 decoding, a 256-token prefill."""

PROBE_WIDTH, PROBE_HIDDEN = 576, 1536
"""The probe's MLP (x @ up -> SiLU -> @ down): SmolLM2-135M's hidden and intermediate widths."""

SIXTEEN_BIT = ("bfloat16", "float16")

_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

# The CPU flags (/proc/cpuinfo) that mean hardware for a 16-bit dtype: x86 names, then Arm's.
_HARDWARE_FLAGS = {
    "bfloat16": ({"avx512_bf16", "amx_bf16"}, {"bf16"}),
    "float16": ({"avx512_fp16", "amx_fp16"}, {"fphp"}),
}


def dtype_name(value: object) -> str | None:
    """``torch.bfloat16``, ``"bf16"``, ``"torch.float16"`` → the canonical name; None for None or an unknown one."""
    if value is None:
        return None
    return _ALIASES.get(str(value).lower().removeprefix("torch."))


@dataclass(frozen=True)
class CpuInfo:
    """What the operating system says about the CPU: its model, architecture and feature flags."""

    model: str
    arch: str
    flags: frozenset[str]


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (Linux); elsewhere what :mod:`platform` says, no flags."""
    model, flags = "", frozenset[str]()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not model and key in ("model name", "hardware", "cpu model", "uarch"):
            model = value
        elif not flags and key in ("flags", "features"):
            flags = frozenset(value.split())
    return CpuInfo(model=model or platform.processor() or "unknown CPU", arch=platform.machine(), flags=flags)


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_fingerprint(info: CpuInfo | None = None, environ: Mapping[str, str] | None = None) -> str:
    """What a cached measurement is valid for: the CPU, the threads torch gets, torch, and the ISA caps."""
    info = info or read_cpuinfo()
    env = os.environ if environ is None else environ
    parts = {
        "arch": info.arch,
        "cpu": info.model,
        "flags": sorted(info.flags),
        "threads": _threads(),
        "torch": _torch_version(),
        "ATEN_CPU_CAPABILITY": env.get("ATEN_CPU_CAPABILITY", ""),
        "ONEDNN_MAX_CPU_ISA": env.get("ONEDNN_MAX_CPU_ISA", ""),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class CpuProfile(BaseModel):
    """One machine's answer: what torch reports about its CPU, and how fast each 16-bit dtype measured against
    float32 (``speed``: geometric mean over :data:`PROBE_ROWS`; ``speed_by_rows``: each shape's own ratio)."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    cpu: str
    arch: str
    capability: str
    """``torch.backends.cpu.get_cpu_capability()``: the instruction set torch's kernels use (AVX2, AVX512, ...)."""
    hardware: dict[str, bool | None]
    """Per 16-bit dtype: does the CPU have hardware for it (None: unknown, e.g. no flags to read)."""
    threads: int
    torch_version: str
    speed: dict[str, float]
    speed_by_rows: dict[str, dict[str, float]]
    measured_at: str
    measure_seconds: float

    def fast(self, dtype: str) -> bool:
        """float32 always; a 16-bit dtype where the hardware is there (or unknown) and the measurement confirms it."""
        name = dtype_name(dtype) or dtype
        if name == "float32":
            return True
        return self.hardware.get(name) is not False and self.speed.get(name, 0.0) >= FAST_RATIO

    def describe(self) -> str:
        """E.g. ``Intel(R) Xeon(R) ... (x86_64, torch capability AVX512, no bfloat16 or float16 hardware)``."""
        have = [d for d in SIXTEEN_BIT if self.hardware.get(d)]
        lack = [d for d in SIXTEEN_BIT if self.hardware.get(d) is False]
        bits = [f"{self.arch}, torch capability {self.capability}"]
        if have:
            bits.append(f"{' and '.join(have)} hardware")
        if lack:
            bits.append(f"no {' or '.join(lack)} hardware")
        return f"{self.cpu} ({', '.join(bits)})"

    def why(self, dtype: str) -> str:
        """Why ``dtype`` is or is not fast here, in words, with the measurement."""
        name = dtype_name(dtype) or dtype
        ratio = self.speed.get(name)
        measured = (
            f"its matmuls measured {ratio:.2f}x float32's speed ({self._shapes(name)}; {self.measured_at[:10]})"
            if ratio is not None
            else "not measured"
        )
        if self.hardware.get(name) is False:
            return f"this CPU has no {name} hardware, {self.describe()}; {measured}"
        return f"on this CPU, {self.describe()}, {measured}"

    def brief(self, dtype: str) -> str:
        """``no bfloat16 hardware, bfloat16 measured 0.68x float32's speed``: the why, short."""
        name = dtype_name(dtype) or dtype
        ratio = self.speed.get(name)
        measured = f"{name} measured {ratio:.2f}x float32's speed" if ratio is not None else f"{name} not measured"
        return f"no {name} hardware, {measured}" if self.hardware.get(name) is False else measured

    def _shapes(self, name: str) -> str:
        rows = list(self.speed_by_rows.get(name, {}).items())
        return ", ".join(f"{v:.2f}x at {r} row{'s' if r != '1' else ''}" for r, v in rows)


Measure = Callable[[], tuple[dict[str, dict[str, float]], str, dict[str, bool | None]]]
"""The measurement: (speed by dtype and rows, torch's capability, hardware per 16-bit dtype)."""


def _hardware_from_flags(info: CpuInfo) -> dict[str, bool | None]:
    if not info.flags:
        return dict.fromkeys(SIXTEEN_BIT)
    x86 = info.arch.lower() in ("x86_64", "amd64", "i686", "i386")
    return {d: bool(info.flags & _HARDWARE_FLAGS[d][0 if x86 else 1]) for d in SIXTEEN_BIT}


def _torch_hardware(info: CpuInfo) -> dict[str, bool | None]:
    """What torch itself reports on x86 (its cpuinfo), else the CPU's flags."""
    import torch

    hardware = _hardware_from_flags(info)
    cpu = getattr(torch, "cpu", None)
    checks = {
        "bfloat16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
        "float16": ("_is_amx_fp16_supported",),
    }
    for dtype, names in checks.items():
        found = [getattr(cpu, n) for n in names if callable(getattr(cpu, n, None))]
        if found and any(f() for f in found):
            hardware[dtype] = True
    return hardware


def measure_speeds(
    dtypes: tuple[str, ...] = SIXTEEN_BIT, *, rounds: int = 3, budget_s: float = 0.04
) -> dict[str, dict[str, float]]:
    """Per 16-bit dtype and rows: float32's time over that dtype's for the probe MLP, best of ``rounds`` interleaved
    rounds of about ``budget_s`` each (a ratio above 1: that dtype is faster). Uses as many threads as this process
    may run on, as a server would."""
    import torch
    import torch.nn.functional as F

    before = torch.get_num_threads()
    torch.set_num_threads(_threads())
    try:
        generator = torch.Generator().manual_seed(0)
        up32 = torch.randn(PROBE_HIDDEN, PROBE_WIDTH, generator=generator) * 0.02
        down32 = torch.randn(PROBE_WIDTH, PROBE_HIDDEN, generator=generator) * 0.02
        xs32 = {rows: torch.randn(rows, PROBE_WIDTH, generator=generator) for rows in PROBE_ROWS}
        kinds = {"float32": torch.float32, **{d: getattr(torch, d) for d in dtypes}}
        tensors = {
            name: (up32.to(t), down32.to(t), {rows: x.to(t) for rows, x in xs32.items()}) for name, t in kinds.items()
        }
        best: dict[tuple[str, int], float] = {}
        with torch.inference_mode():
            for _ in range(rounds):
                for rows in PROBE_ROWS:
                    for name, (up, down, xs) in tensors.items():
                        x = xs[rows]
                        F.linear(F.silu(F.linear(x, up)), down)  # warm-up: first call allocates and picks kernels
                        calls, started = 0, time.perf_counter()
                        while True:
                            F.linear(F.silu(F.linear(x, up)), down)
                            calls += 1
                            elapsed = time.perf_counter() - started
                            if elapsed >= budget_s:
                                break
                        per_call = elapsed / calls
                        best[name, rows] = min(best.get((name, rows), math.inf), per_call)
    finally:
        torch.set_num_threads(before)
    return {d: {str(rows): best["float32", rows] / best[d, rows] for rows in PROBE_ROWS} for d in dtypes}


def _measure_with_torch() -> tuple[dict[str, dict[str, float]], str, dict[str, bool | None]]:
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability())
    return measure_speeds(), capability, _torch_hardware(read_cpuinfo())


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


def measure_profile(measure: Measure | None = None, info: CpuInfo | None = None) -> CpuProfile:
    """Measure this machine now (about two seconds; torch needed)."""
    info = info or read_cpuinfo()
    started = time.perf_counter()
    by_rows, capability, hardware = (measure or _measure_with_torch)()
    return CpuProfile(
        fingerprint=cpu_fingerprint(info),
        cpu=info.model,
        arch=info.arch,
        capability=capability,
        hardware=hardware,
        threads=_threads(),
        torch_version=_torch_version(),
        speed={d: round(_geomean(list(rows.values())), 3) for d, rows in by_rows.items()},
        speed_by_rows={d: {r: round(v, 3) for r, v in rows.items()} for d, rows in by_rows.items()},
        measured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        measure_seconds=round(time.perf_counter() - started, 2),
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    profiles = data.get("profiles") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    return dict(profiles) if isinstance(profiles, dict) else {}


def cpu_profile(*, remeasure: bool = False, measure: Measure | None = None, info: CpuInfo | None = None) -> CpuProfile:
    """This machine's profile: from the cache when its fingerprint matches, else measured now and cached."""
    info = info or read_cpuinfo()
    fingerprint = cpu_fingerprint(info)
    path = cache_dir() / CACHE_FILE
    profiles = _read_cache(path)
    if not remeasure and fingerprint in profiles:
        try:
            return CpuProfile.model_validate(profiles[fingerprint])
        except ValidationError:
            logger.info("the cached CPU measurement in %s is unreadable; measuring again", path)
    logger.info(
        "measuring how fast this CPU (%s) computes bfloat16 and float16 against float32: once, about 2 s; cached in %s",
        info.model,
        path,
    )
    profile = measure_profile(measure, info)
    try:
        store_profile(profile)
    except OSError as exc:
        logger.warning("could not cache the CPU measurement in %s (%s); it will be measured again next time", path, exc)
    logger.info(
        "this CPU: %s; bfloat16 %.2fx, float16 %.2fx float32's speed",
        profile.describe(),
        profile.speed.get("bfloat16", 0.0),
        profile.speed.get("float16", 0.0),
    )
    return profile


def store_profile(profile: CpuProfile) -> Path:
    """Cache ``profile`` under its fingerprint (beside the other machines' profiles); returns the cache file. A
    profile made by :func:`synthetic_profile` for this machine forces the decision (tests, benchmarks)."""
    path = cache_dir() / CACHE_FILE
    profiles = _read_cache(path)
    profiles[profile.fingerprint] = profile.model_dump(mode="json")
    atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "profiles": profiles}, indent=2) + "\n")
    return path


def synthetic_profile(
    *,
    bfloat16: tuple[bool | None, float],
    float16: tuple[bool | None, float] = (False, 0.2),
    capability: str = "AVX2",
    cpu: str = "synthetic CPU",
    info: CpuInfo | None = None,
) -> CpuProfile:
    """A profile that says what it is told, for this machine's fingerprint: per 16-bit dtype (hardware, speed
    relative to float32). For tests and for benchmarks that show both branches on one machine."""
    info = info or read_cpuinfo()
    speeds = {"bfloat16": bfloat16[1], "float16": float16[1]}
    return CpuProfile(
        fingerprint=cpu_fingerprint(info),
        cpu=cpu,
        arch=info.arch,
        capability=capability,
        hardware={"bfloat16": bfloat16[0], "float16": float16[0]},
        threads=_threads(),
        torch_version=_torch_version(),
        speed=speeds,
        speed_by_rows={d: {str(r): v for r in PROBE_ROWS} for d, v in speeds.items()},
        measured_at="synthetic",
        measure_seconds=0.0,
    )


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype to compute in, and what to tell the user: ``note`` when ``auto`` fell back to float32 (one info
    line), ``warning`` when an explicit 16-bit dtype is slow on this CPU."""

    dtype: str
    requested: str | None
    reason: str
    """Why, in a few words (for a one-line summary such as the dry run's)."""
    note: str | None = None
    warning: str | None = None

    def log(self, who: str, log: logging.Logger = logger) -> None:
        if self.note:
            log.info("%s: %s", who, self.note)
        if self.warning:
            log.warning("%s: %s", who, self.warning)


def choose_cpu_dtype(
    requested: str | None, checkpoint_dtype: object, profile: Callable[[], CpuProfile] = cpu_profile
) -> DtypeChoice:
    """The dtype a model computes in on this CPU (see the module's text). ``checkpoint_dtype``: its config's dtype
    (a name or a torch dtype), for ``auto``. ``profile`` is only called when the answer depends on it."""
    if requested is None:
        return DtypeChoice("float32", None, "the CPU default")
    asked = requested.lower()
    if asked != "auto" and dtype_name(asked) is None:
        names = ", ".join(sorted(_ALIASES))
        raise ConfigError(f"unknown dtype {requested!r}; use one of {names} or auto")
    auto = asked == "auto"
    name = (dtype_name(checkpoint_dtype) if auto else dtype_name(asked)) or "float32"
    origin = "the checkpoint's own" if auto else "as asked"
    if name == "float32":
        return DtypeChoice("float32", requested, origin)
    found = profile()
    if found.fast(name):
        return DtypeChoice(name, requested, f"{origin}; this CPU computes it fast ({found.brief(name)})")
    if auto:
        note = (
            f"computing in float32, not the checkpoint's {name} (--dtype auto): {found.why(name)}; "
            f"pass --dtype {name} to compute in {name} anyway"
        )
        return DtypeChoice("float32", requested, f"not the checkpoint's {name}: {found.brief(name)}", note=note)
    ratio = found.speed.get(name)
    slower = f", about {1 / ratio:.1f}x slower than float32" if ratio else ""
    warning = (
        f"computing in {name} as asked (--dtype {requested}){slower}: {found.why(name)}; "
        "--dtype float32 or auto computes in float32 here"
    )
    return DtypeChoice(name, requested, f"as asked, though slow here: {found.brief(name)}", warning=warning)


def cpu_summary() -> str:
    """One line naming this CPU for a benchmark's header: its model, the threads, torch's capability where torch is
    already imported (never imported here, so memory measurements stay clean), and its 16-bit hardware."""
    import sys

    info = read_cpuinfo()
    hardware = _hardware_from_flags(info)
    torch = sys.modules.get("torch")
    parts = [f"{_threads()} threads"]
    if "avx512f" in info.flags or "avx2" in info.flags:
        parts.append("AVX-512" if "avx512f" in info.flags else "AVX2")
    if torch is not None:
        parts.append(f"torch capability {torch.backends.cpu.get_cpu_capability()}")
    have = [d for d in SIXTEEN_BIT if hardware.get(d)]
    lack = [d for d in SIXTEEN_BIT if hardware.get(d) is False]
    if have:
        parts.append(f"{' and '.join(have)} hardware")
    if lack:
        parts.append(f"no {' or '.join(lack)} hardware")
    parts += [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)]
    return f"{info.model} ({', '.join(parts)})"
