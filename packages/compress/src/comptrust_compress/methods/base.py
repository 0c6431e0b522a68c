"""What a compression method is, and the decorator that registers one.

A method is a class with a few class attributes (name, summary, the options it takes, its backend) and a handful of
hooks the pipeline calls in order: ``validate`` (before any work), ``apply`` (compress the loaded model in place),
``save`` (write the Hugging Face files), ``verify`` (check the measured facts, raise if the method did not do what
was asked). Modules that register methods import their heavy dependencies inside the hooks, never at import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from comptrust_core import MeasuredFacts, MethodSpec, ServingHints

from comptrust_compress._version import __version__
from comptrust_compress.config import CompressConfig, MethodOption

if TYPE_CHECKING:
    import torch

    from comptrust_compress.calibration import CalibrationSet

__all__ = ["CompressionMethod", "Job", "register_method", "registered_methods"]

M = TypeVar("M", bound="type[CompressionMethod]")

_REGISTRY: dict[str, type[CompressionMethod]] = {}


@dataclass(frozen=True)
class Job:
    """What the pipeline prepared for :meth:`CompressionMethod.apply` before any compression work."""

    widths: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``(out_features, in_features)`` of every compressible Linear, by qualified name."""
    group_sizes: dict[str, int] = field(default_factory=dict)
    """The quantization group size of every compressible Linear (from :meth:`CompressionMethod.check_layers`)."""
    calibration: CalibrationSet | None = None
    """The drawn calibration windows, for methods with ``needs_calibration``."""


class CompressionMethod(ABC):
    """One compression method. Subclass it, set the class attributes, and decorate with :func:`register_method`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[frozenset[MethodOption]] = frozenset()
    """The method options (config fields) this method takes; any other one given is an error."""
    backend: ClassVar[str] = "comptrust"
    needs_calibration: ClassVar[bool] = False
    """True: the pipeline draws calibration data (``--calib-*``) before loading the model and hands it to apply."""
    loads_on_cpu: ClassVar[bool] = False
    """True: the model is loaded on the CPU even with ``--device cuda``; apply moves one layer at a time."""

    def unavailable_reason(self) -> str | None:
        """Why this method cannot run in this environment (a missing optional dependency), or None."""
        return None

    def backend_version(self) -> str:
        return __version__

    def validate(self, config: CompressConfig) -> None:
        """Method-specific checks of ``config``; raise :class:`~comptrust_core.ConfigError`. Runs before any work."""
        return None

    def check_layers(self, config: CompressConfig, widths: dict[str, tuple[int, int]]) -> dict[str, int]:
        """Checks that need the layer widths (read from the model's config, no weights); raise ConfigError.

        Returns the quantization group size per layer (empty for methods that do not quantize).
        """
        return {}

    def level_tag(self, config: CompressConfig) -> str | None:
        """The compression level in the default checkpoint name, e.g. ``s0.5`` or ``2of4``; None for none."""
        return None

    @abstractmethod
    def method_spec(self, config: CompressConfig) -> MethodSpec:
        """The manifest's record of the method and every parameter that changes its output."""

    def serving_hints(self, dtype: str, config: CompressConfig) -> ServingHints:
        """What a server needs to load the checkpoint: dense and pruned checkpoints need no ``--quantize``."""
        return ServingHints(dtype=dtype)

    @abstractmethod
    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: torch.device, job: Job) -> None:
        """Compress ``model`` (a transformers causal LM, possibly still on the CPU) in place."""

    def save(
        self, model: Any, tokenizer: Any, folder: Path, storage_dtype: torch.dtype, config: CompressConfig
    ) -> None:
        """Write the Hugging Face files of the compressed model into ``folder`` (dense weights by default)."""
        from comptrust_compress.hf import save_hf_folder

        save_hf_folder(model, tokenizer, folder, storage_dtype)

    def verify(self, facts: MeasuredFacts, config: CompressConfig) -> None:
        """Raise :class:`~comptrust_compress.VerificationError` when ``facts`` show the method did not do its job."""
        return None


def register_method(cls: M) -> M:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    name = cls.name
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"compression method {name!r} is registered twice ({existing.__module__}, {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def registered_methods() -> dict[str, type[CompressionMethod]]:
    return dict(_REGISTRY)
