"""The shared driver of the methods llm-compressor runs (gptq, awq, rtn, sparsegpt, wanda): one ``oneshot`` call.

The model arrives loaded from its saved folder on the CPU; llm-compressor's sequential pipeline moves one decoder
layer at a time to the work device with its calibration activations, so accelerator memory stays at about one layer
plus activations. The calibration windows go in as a ready DataLoader (equal-length windows batched) with the tokenizer.

Two narrow adjustments, each undone when ``oneshot`` returns:

- the work device is the one asked for (``--device``), not llm-compressor's own pick (it takes any visible GPU);
- on a machine without CUDA, AWQ's ``IntermediatesCache.pin_memory`` call (pinning cached activations for faster
  host-to-GPU copies, llm-compressor 0.14.0.1, ``modifiers/transform/awq/base.py``) is made a no-op: pinning needs a
  CUDA driver and the copies it speeds up do not happen on a CPU run.

Export: ``compressed`` saves compressed-tensors (llm-compressor's own ``save_pretrained``, packed integers plus
scales); ``fake-quant`` replaces each quantized weight by exactly what a loader dequantizes the compressed export to
(compressed-tensors' own compress then decompress, on the weights and scales cast to the storage dtype first, as the
compressed export does), drops the quantization state and saves plain dense weights: the two exports are one model.
Pruned models are always saved dense.
"""

from __future__ import annotations

import contextlib
import logging
from abc import abstractmethod
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from comptrust_core import MeasuredFacts, MethodSpec, ServingHints

from comptrust_compress.backend_output import route_llmcompressor_logs
from comptrust_compress.config import DEFAULT_GROUP_SIZE, CompressConfig
from comptrust_compress.errors import VerificationError
from comptrust_compress.methods.base import CompressionMethod, Job

if TYPE_CHECKING:
    import torch

    from comptrust_compress.calibration import CalibrationSet

__all__ = [
    "DAMPENING",
    "DEFAULT_BITS",
    "LlmCompressorMethod",
    "QuantizingMethod",
    "decoder_targets",
    "fake_quantize_in_place",
    "run_oneshot",
]

log = logging.getLogger(__name__)

DEFAULT_BITS = 4
DAMPENING = 0.01
"""GPTQ's and SparseGPT's ``percdamp``: the fraction of the mean Hessian diagonal added to it before inverting."""
_QUANT_PARAMS = ("weight_scale", "weight_zero_point", "weight_g_idx", "weight_global_scale")
_QUANT_ATTRS = ("quantization_scheme", "quantization_status", "quantization_enabled")


def decoder_targets(names: list[str]) -> list[str]:
    """llm-compressor targets for exactly the compressible Linears (``names``): one pattern per module suffix."""
    from comptrust_compress.quantgroups import targets_by_group_size

    return [target for targets in targets_by_group_size(dict.fromkeys(names, 0)).values() for target in targets]


CALIBRATION_BATCH = 8
"""Calibration windows per forward pass. Batching equal-length windows gives the same statistics (GPTQ's and
SparseGPT's Hessians, Wanda's norms and AWQ's activation means sum over every token either way) at a fraction of
the per-call cost: on a CPU, AWQ's scale search ran several times faster than with one window per batch."""


def _batches(calibration: CalibrationSet) -> list[dict[str, torch.Tensor]]:
    import torch

    by_length: dict[int, list[list[int]]] = {}
    for window in calibration.windows:
        by_length.setdefault(len(window), []).append(list(window))
    batches = []
    for length, windows in by_length.items():
        for start in range(0, len(windows), CALIBRATION_BATCH):
            chunk = windows[start : start + CALIBRATION_BATCH]
            batches.append(
                {
                    "input_ids": torch.tensor(chunk, dtype=torch.long),
                    "attention_mask": torch.ones(len(chunk), length, dtype=torch.long),
                }
            )
    return batches


@contextlib.contextmanager
def _work_device(device: torch.device) -> Iterator[None]:
    """Make llm-compressor's pipelines onload layers to ``device`` instead of whatever accelerator it finds."""
    import torch
    from llmcompressor.pipelines.data_free import pipeline as data_free
    from llmcompressor.pipelines.sequential import pipeline as sequential

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    saved = [(module, module.get_main_device) for module in (sequential, data_free)]
    try:
        for module, _ in saved:
            module.get_main_device = lambda: device  # type: ignore[attr-defined]
        yield
    finally:
        for module, original in saved:
            module.get_main_device = original  # type: ignore[attr-defined]


@contextlib.contextmanager
def _no_pin_memory_without_cuda(device: torch.device) -> Iterator[None]:
    """On a CPU run, skip AWQ's unguarded ``IntermediatesCache.pin_memory`` (it fails with no CUDA driver)."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    if device.type == "cuda":
        yield
        return
    original = IntermediatesCache.pin_memory

    def skip_pinning(self: Any, batch_index: int, input_names: list[str] | None = None) -> None:
        return None

    IntermediatesCache.pin_memory = skip_pinning  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


def run_oneshot(
    model: Any, tokenizer: Any, recipe: list[Any], calibration: CalibrationSet | None, device: torch.device
) -> None:
    """Run llm-compressor's ``oneshot`` on ``model`` in place: sequential (layer by layer) when there is data."""
    from llmcompressor.entrypoints.oneshot import oneshot
    from torch.utils.data import DataLoader

    dataset: DataLoader[Any] | None = None
    if calibration is not None:
        dataset = DataLoader(_batches(calibration), batch_size=None)  # type: ignore[arg-type]
    with _work_device(device), _no_pin_memory_without_cuda(device):
        oneshot(
            model=model,
            tokenizer=tokenizer,
            recipe=recipe,
            dataset=dataset,
            pipeline="sequential" if dataset is not None else "datafree",
            num_calibration_samples=len(calibration.windows) if calibration is not None else 0,
            max_seq_length=calibration.seqlen if calibration is not None else None,
            sequential_offload_device="cpu",
        )


def fake_quantize_in_place(model: Any, storage_dtype: torch.dtype) -> int:
    """Cast ``model`` to ``storage_dtype`` and replace every quantized weight by exactly what loading the compressed
    export dequantizes it to; remove the quantization state and return how many weights were replaced.

    The compressed export (:func:`~comptrust_compress.hf.save_hf_folder`) casts the model, scales included, to the
    storage dtype and then lets compressed-tensors' compressor quantize each weight with those scales and zero points;
    a loader dequantizes the stored integers with the same scales. Here each quantized module's own state goes
    through that same compressor, ``compress`` then ``decompress``, so the fake-quant weights are bit for bit the
    compressed checkpoint's dequantized weights (the same integers, scales and zero points, in the storage dtype).
    """
    import torch
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.utils import get_direct_state_dict, replace_direct_state_dict

    model.to(storage_dtype)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None or scheme.weights is None:
                continue
            # The format the compressed export would use for this module (compress_module's choice).
            form = CompressionFormat(scheme.format or infer_module_format(type(module), scheme))
            compressor: Any = BaseCompressor.get_value_from_registry(form.value)
            state = get_direct_state_dict(module)
            restored = compressor.decompress(compressor.compress(state, scheme), scheme)["weight"]
            weight = state["weight"]
            if restored.shape != weight.shape or restored.dtype != weight.dtype:
                raise RuntimeError(
                    f"compressed-tensors' {form.value} round trip gave a {restored.dtype} {tuple(restored.shape)} "
                    f"weight for a {weight.dtype} {tuple(weight.shape)} one"
                )
            # Written back as the compressor writes a module's state, which also reaches the stored copy of a module
            # that llm-compressor left offloaded (on a GPU run, ``module.weight`` is a temporary onloaded copy).
            kept = {name: value for name, value in state.items() if name not in _QUANT_PARAMS}
            replace_direct_state_dict(module, {**kept, "weight": restored})
            for name in _QUANT_ATTRS:
                if hasattr(module, name):
                    delattr(module, name)
            count += 1
    return count


class LlmCompressorMethod(CompressionMethod):
    """A method that llm-compressor runs: subclasses say which modifiers (:meth:`recipe`)."""

    backend: ClassVar[str] = "llm-compressor"
    needs_calibration: ClassVar[bool] = True
    loads_on_cpu: ClassVar[bool] = True

    def unavailable_reason(self) -> str | None:
        try:
            version("llmcompressor")
        except PackageNotFoundError:
            return "llm-compressor is not installed"
        return None

    def backend_version(self) -> str:
        return f"llmcompressor {version('llmcompressor')}, compressed-tensors {version('compressed-tensors')}"

    @abstractmethod
    def recipe(self, config: CompressConfig, job: Job) -> list[Any]:
        """The llm-compressor modifiers for this run."""

    def apply(self, model: Any, tokenizer: Any, config: CompressConfig, device: torch.device, job: Job) -> None:
        route_llmcompressor_logs()
        run_oneshot(model, tokenizer, self.recipe(config, job), job.calibration, device)


class QuantizingMethod(LlmCompressorMethod):
    """Weight-only integer quantization in groups (``--bits``, ``--group-size``), exported either way."""

    symmetric: ClassVar[bool] = True

    def bits(self, config: CompressConfig) -> int:
        return config.bits if config.bits is not None else DEFAULT_BITS

    def group_size(self, config: CompressConfig) -> int:
        return config.group_size if config.group_size is not None else DEFAULT_GROUP_SIZE

    def export(self, config: CompressConfig) -> str:
        return config.export or "compressed"

    def actorder(self, config: CompressConfig) -> str | None:
        """llm-compressor's ``actorder`` value; None for methods without activation ordering."""
        return None

    def level_tag(self, config: CompressConfig) -> str:
        tag = f"w{self.bits(config)}g{self.group_size(config)}"
        return tag + ("-fq" if self.export(config) == "fake-quant" else "")

    def check_layers(self, config: CompressConfig, widths: dict[str, tuple[int, int]]) -> dict[str, int]:
        from comptrust_compress.quantgroups import group_sizes

        return group_sizes(widths, self.group_size(config))

    def method_spec(self, config: CompressConfig) -> MethodSpec:
        export = self.export(config)
        return MethodSpec(
            name=self.name,
            bits=self.bits(config),
            group_size=self.group_size(config),
            act_order=self.actorder(config) is not None,
            export="compressed" if export == "compressed" else "fake-quant",
            extra={
                "symmetric": self.symmetric,
                "group_size_rule": "largest divisor of the layer's input width <= --group-size",
            },
        )

    def serving_hints(self, dtype: str, config: CompressConfig) -> ServingHints:
        if self.export(config) == "compressed":
            return ServingHints(dtype=dtype, tgi_quantize="compressed-tensors", vllm_quantization="compressed-tensors")
        return ServingHints(dtype=dtype)

    def config_groups(self, config: CompressConfig, job: Job) -> dict[str, Any]:
        """One llm-compressor config group per distinct group size, targeting the layers that use it."""
        from comptrust_compress.quantgroups import targets_by_group_size

        groups: dict[str, Any] = {}
        for index, (size, targets) in enumerate(targets_by_group_size(job.group_sizes).items()):
            weights: dict[str, Any] = {
                "num_bits": self.bits(config),
                "type": "int",
                "symmetric": self.symmetric,
                "strategy": "channel" if size == -1 else "group",
                "group_size": None if size == -1 else size,
                "actorder": self.actorder(config),
            }
            groups[f"group_{index}"] = {"targets": targets, "weights": weights}
        return groups

    def save(
        self, model: Any, tokenizer: Any, folder: Path, storage_dtype: torch.dtype, config: CompressConfig
    ) -> None:
        from comptrust_compress.hf import save_hf_folder

        if self.export(config) == "fake-quant":
            done = fake_quantize_in_place(model, storage_dtype)
            log.info("%s: wrote %d layers as dequantized dense weights (fake-quant)", self.name, done)
        save_hf_folder(model, tokenizer, folder, storage_dtype)

    def verify(self, facts: MeasuredFacts, config: CompressConfig) -> None:
        bits = self.bits(config)
        levels = facts.quant_levels_max
        if levels is None or levels > 2**bits:
            raise VerificationError(
                f"{self.name} was asked for {bits}-bit weights but a quantization group of the written checkpoint "
                f"holds {levels} distinct values (at most {2**bits} expected): the weights were not quantized; "
                "nothing was written"
            )
        if self.export(config) == "compressed" and facts.effective_bits >= 16:
            raise VerificationError(
                f"{self.name} was asked for a compressed export but the checkpoint stores {facts.effective_bits:.2f} "
                "bits per weight; nothing was written"
            )
