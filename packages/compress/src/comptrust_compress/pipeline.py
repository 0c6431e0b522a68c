"""``compress(config) -> Path``: validate everything, resolve and load the base model, compress, write, verify.

The checkpoint is built in a hidden temporary folder beside ``config.out`` and renamed into place only after the
manifest, the last file, is written; any failure (Ctrl-C included) removes the temporary folder, so a folder at
``--out`` is always a finished checkpoint.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comptrust_core import BackendInfo, ConfigError, Manifest, MeasuredFacts, write_manifest
from comptrust_core.cpu_dtype import choose_cpu_dtype
from comptrust_core.storage import as_os_error, check_free_space, human_bytes, is_storage_error, storage_error

from comptrust_compress._fs import publish_dir, staging_dir
from comptrust_compress._version import __version__
from comptrust_compress.config import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_CALIB_SEQLEN,
    CompressConfig,
    flag_name,
    parse_pattern,
)
from comptrust_compress.errors import VerificationError
from comptrust_compress.methods import CompressionMethod, get_method
from comptrust_compress.methods.base import Job
from comptrust_compress.models import ModelKind, check_model_source, resolve_model
from comptrust_compress.space import checkpoint_bytes

if TYPE_CHECKING:
    import torch

    from comptrust_compress.perplexity import Perplexity

__all__ = ["Plan", "compress", "default_name", "plan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` checked: the method to run, where, and what kind of model input it got."""

    config: CompressConfig
    method: CompressionMethod
    device: torch.device
    model_kind: ModelKind


def _check_options(method: CompressionMethod, config: CompressConfig) -> None:
    extra = [option for option in config.given_options() if option not in method.options]
    if extra:
        takes = ", ".join(flag_name(o) for o in sorted(method.options)) or "no method options"
        raise ConfigError(
            f"{flag_name(extra[0])} does not apply to method {method.name} (it takes {takes}); drop it"
            if len(extra) == 1
            else f"{', '.join(flag_name(o) for o in extra)} do not apply to method {method.name} (it takes {takes}); "
            "drop them"
        )


def _check_out(out: Path) -> None:
    if os.path.lexists(out):
        raise ConfigError(f"--out {out} already exists; pass a new folder (a checkpoint is never overwritten)")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {out}: {ancestor} is a file, not a folder; pass a path inside a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {ancestor} is not writable; pass a folder you can write to")


def _pick_device(config: CompressConfig) -> torch.device:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible here; pass --device cpu")
    if config.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def plan(config: CompressConfig) -> Plan:
    """Validate ``config`` completely without loading, downloading or writing anything."""
    method = get_method(config.method)
    _check_options(method, config)
    method.validate(config)
    if method.needs_calibration:
        from comptrust_compress.calibration import DEFAULT_CALIB_DATA, check_calibration_source

        check_calibration_source(config.calib_data or DEFAULT_CALIB_DATA)
    _check_out(config.out)
    device = _pick_device(config)
    kind = check_model_source(config.model)
    return Plan(config=config, method=method, device=device, model_kind=kind)


def default_name(model_short_name: str, method: CompressionMethod, config: CompressConfig) -> str:
    """``<model>-<method>[-<level>]``, e.g. ``smollm2-135m-instruct-magnitude-2of4``."""
    parts = [model_short_name, method.name]
    tag = method.level_tag(config)
    if tag:
        parts.append(tag)
    cleaned = [re.sub(r"[^A-Za-z0-9._+=-]+", "-", part).strip("-._") for part in parts]
    return "-".join(part for part in cleaned if part)[:128] or method.name


def _device_label(device: torch.device) -> str:
    import torch

    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _prepare_job(checked: Plan, folder: Path, tokenizer: object) -> Job:
    """Everything checkable before the weights are loaded: layer widths, group sizes, the calibration draw."""
    from comptrust_compress.calibration import DEFAULT_CALIB_DATA, DEFAULT_CALIB_SEED, draw_calibration
    from comptrust_compress.layerwise import layer_widths

    config, method = checked.config, checked.method
    widths = layer_widths(folder, trust_remote_code=config.trust_remote_code)
    group_sizes = method.check_layers(config, widths)
    calibration = None
    if method.needs_calibration:
        seqlen = config.calib_seqlen or min(DEFAULT_CALIB_SEQLEN, _context_length(folder))
        calibration = draw_calibration(
            tokenizer,
            source=config.calib_data or DEFAULT_CALIB_DATA,
            samples=config.calib_samples or DEFAULT_CALIB_SAMPLES,
            seqlen=seqlen,
            seed=DEFAULT_CALIB_SEED if config.calib_seed is None else config.calib_seed,
        )
    return Job(widths=widths, group_sizes=group_sizes, calibration=calibration)


def _context_length(folder: Path) -> int:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = data.get("text_config") if isinstance(data.get("text_config"), dict) else data
    limit = text.get("max_position_embeddings") or data.get("max_position_embeddings")
    return int(limit) if isinstance(limit, int) else DEFAULT_CALIB_SEQLEN


def compress(config: CompressConfig) -> Path:
    """Compress ``config.model`` with ``config.method`` into the new checkpoint folder ``config.out``; return it."""
    started = time.perf_counter()
    checked = plan(config)
    import torch

    from comptrust_compress.hf import dtype_name, load_model, load_tokenizer, storage_dtype
    from comptrust_compress.measure import peak_memory

    method, device = checked.method, checked.device
    resolved = resolve_model(config.model, trust_remote_code=config.trust_remote_code)
    name = config.name or default_name(resolved.short_name, method, config)
    store_dtype = storage_dtype(resolved.path)
    # On a CPU every machine computes in the CPU default, float32 (the one decision, comptrust_core.cpu_dtype): fast
    # on any CPU, and a checkpoint's measured facts (perplexity, the solvers' statistics) do not depend on which CPU
    # wrote it. On a GPU, the storage dtype.
    compute_dtype = getattr(torch, choose_cpu_dtype(None, store_dtype).dtype) if device.type == "cpu" else store_dtype
    tokenizer = load_tokenizer(resolved.path, trust_remote_code=config.trust_remote_code)
    job = _prepare_job(checked, resolved.path, tokenizer)
    needed = checkpoint_bytes(
        resolved.path,
        job,
        store_bytes=store_dtype.itemsize,
        bits=method.method_spec(config).bits,
        packed=bool(job.group_sizes) and (config.export or "compressed") == "compressed",
    )
    check_free_space(config.out.absolute().parent, needed, f"the checkpoint {name}")
    # Methods that work layer by layer keep the model on the CPU and move one layer at a time to the device.
    home = torch.device("cpu") if method.loads_on_cpu else device
    log.info("loading %s from %s (%s on %s)", config.model, resolved.path, dtype_name(compute_dtype), home)
    model = load_model(resolved.path, dtype=compute_dtype, device=home, trust_remote_code=config.trust_remote_code)
    before = _perplexity_on(model, tokenizer, device, config.ppl_tokens)
    log.info("perplexity before: %.3f on %d held-out tokens", before.value, before.tokens)
    template = getattr(tokenizer, "chat_template", None)

    out = config.out
    try:
        with staging_dir(out) as tmp:
            log.info("compressing with %s into %s", method.name, tmp)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            method.apply(model, tokenizer, config, device, job)
            method.save(model, tokenizer, tmp, store_dtype, config)
            # The peak of the compression itself (on CUDA: one layer plus activations for layer-wise methods).
            compression_peak = peak_memory(device)
            del model, tokenizer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

            facts = _measure_written(
                tmp,
                checked,
                job,
                compute_dtype=compute_dtype,
                chat_template=template,
                perplexity_before=before.value,
                started=started,
                peak=compression_peak,
            )
            method.verify(facts, config)
            spec = method.method_spec(config)
            if job.group_sizes:
                asked = spec.group_size
                differing = {layer: size for layer, size in job.group_sizes.items() if size != asked}
                spec = spec.model_copy(update={"group_size_by_layer": differing})
            manifest = Manifest(
                name=name,
                base_model=resolved.ref,
                method=spec,
                calibration=job.calibration.spec() if job.calibration is not None else None,
                backend=_backend_info(method, device),
                measured=facts,
                serving=method.serving_hints(dtype_name(store_dtype), config),
                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                comptrust_version=__version__,
            )
            write_manifest(tmp, manifest)
            try:
                publish_dir(tmp, out, keep_existing=False)
            except FileExistsError as exc:
                raise ConfigError(
                    f"--out {out} was created by something else while compressing; nothing written"
                ) from exc
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise storage_error(
            out,
            as_os_error(exc),
            f"the checkpoint (about {human_bytes(needed)})",
            after="its partial files were removed and nothing is at --out; then rerun the same command",
        ) from exc
    log.info("wrote %s (%s) in %.1f s", out, name, time.perf_counter() - started)
    return out


def _perplexity_on(model: Any, tokenizer: Any, device: torch.device, max_tokens: int | None) -> Perplexity:
    """Held-out perplexity with the model on ``device``; a model kept on the CPU for layer-wise work goes back."""
    from comptrust_compress.perplexity import perplexity
    from comptrust_compress.texts import project_text

    home = next(model.parameters()).device
    if home.type == device.type:
        return perplexity(model, tokenizer, project_text("heldout"), max_tokens=max_tokens)
    import torch

    model.to(device)
    try:
        return perplexity(model, tokenizer, project_text("heldout"), max_tokens=max_tokens)
    finally:
        model.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measure_written(
    folder: Path,
    checked: Plan,
    job: Job,
    *,
    compute_dtype: torch.dtype,
    chat_template: object,
    perplexity_before: float,
    started: float,
    peak: tuple[int | None, str],
) -> MeasuredFacts:
    """Load the checkpoint just written, as a server would, and measure it."""
    from comptrust_compress.hf import load_model, load_tokenizer
    from comptrust_compress.measure import measure_weights, peak_memory, quant_levels_max, stored_bits_per_weight
    from comptrust_compress.perplexity import perplexity
    from comptrust_compress.texts import project_text, project_text_label

    config, device = checked.config, checked.device
    log.info("verifying the written checkpoint")
    model = load_model(folder, dtype=compute_dtype, device=device, trust_remote_code=config.trust_remote_code)
    tokenizer = load_tokenizer(folder, trust_remote_code=config.trust_remote_code)
    if chat_template and getattr(tokenizer, "chat_template", None) != chat_template:
        raise VerificationError("the written checkpoint lost the base model's chat template; nothing was written")
    weights = measure_weights(model, parse_pattern(config.pattern) if config.pattern is not None else None)
    levels = quant_levels_max(model, job.group_sizes) if job.group_sizes else None
    after = perplexity(model, tokenizer, project_text("heldout"), max_tokens=config.ppl_tokens)
    log.info("perplexity after: %.3f; sparsity %.4f; levels per group %s", after.value, weights.sparsity, levels)
    del model
    peak_bytes, peak_where = peak if device.type == "cuda" else peak_memory(device)
    return MeasuredFacts(
        sparsity=weights.sparsity,
        layers=weights.layers,
        nm_pattern_holds=weights.nm_pattern_holds,
        effective_bits=stored_bits_per_weight(folder, {name: s.numel for name, s in weights.layers.items()}),
        quant_levels_max=levels,
        perplexity_before=perplexity_before,
        perplexity_after=after.value,
        perplexity_text=project_text_label("heldout"),
        perplexity_tokens=after.tokens,
        wall_time_s=round(time.perf_counter() - started, 3),
        peak_memory_bytes=peak_bytes,
        peak_memory_device=f"{peak_where} (compression)" if device.type == "cuda" else peak_where,
    )


def _backend_info(method: CompressionMethod, device: torch.device) -> BackendInfo:
    import torch
    import transformers

    return BackendInfo(
        name=method.backend,
        version=method.backend_version(),
        device=_device_label(device),
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
    )
