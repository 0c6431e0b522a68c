"""Command lines of the real inference engines (TGI's ``text-generation-launcher``, ``vllm serve``), from a checkpoint's
manifest serving hints and the launch options. Pure functions: nothing here starts anything.

TGI gets ``--model-id`` (the checkpoint folder), ``--hostname``, ``--port``, ``--quantize`` (``options.quantize``, else
the manifest's ``serving.tgi_quantize``), ``--num-shard``, ``--max-input-tokens``, ``--max-total-tokens``,
``--max-concurrent-requests``, ``--dtype`` (only for unquantized checkpoints: TGI refuses both), and its own
``--shard-uds-path`` and ``--master-port`` so that several TGI instances can run on one machine. vLLM gets the folder,
``--host``, ``--port``, ``--served-model-name``, ``--quantization`` (``options.quantize``, else the manifest's
``serving.vllm_quantization``), ``--tensor-parallel-size``, ``--max-model-len`` (the total token budget; vLLM has no
separate input limit) and ``--max-num-seqs``. API keys go through the environment (TGI's ``API_KEY``, vLLM's
``VLLM_API_KEY``), never the command line.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from comptrust_core import ConfigError

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers.base import LaunchOptions

__all__ = ["ENGINE_BINARIES", "EngineCommand", "engine_command", "shard_count", "tgi_argv", "vllm_argv"]

logger = logging.getLogger(__name__)

Engine = Literal["tgi", "vllm"]

# The program each engine is started with, looked up on PATH.
ENGINE_BINARIES: Mapping[str, str] = {"tgi": "text-generation-launcher", "vllm": "vllm"}

# The environment variable each engine reads its bearer token from.
_API_KEY_VARS: Mapping[str, str] = {"tgi": "API_KEY", "vllm": "VLLM_API_KEY"}


@dataclass(frozen=True)
class EngineCommand:
    """A command line (program first), the environment it adds, and the API protocol the server will speak."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    protocol: Literal["tgi", "openai"]


def shard_count(options: LaunchOptions) -> int | None:
    """How many GPUs one server spans: ``num_shard``, else one per assigned GPU, else the engine's default (None).

    A ``num_shard`` that disagrees with the number of assigned GPUs is a :class:`ConfigError`."""
    if options.num_shard is not None and options.num_shard < 1:
        raise ConfigError(f"--num-shard must be at least 1, not {options.num_shard}")
    if options.gpus and options.num_shard is not None and options.num_shard != len(options.gpus):
        gpus = ",".join(map(str, options.gpus))
        raise ConfigError(f"--num-shard {options.num_shard} does not match the {len(options.gpus)} GPU(s) {gpus}")
    if options.num_shard is not None:
        return options.num_shard
    return len(options.gpus) or None


def _quantize(checkpoint: Checkpoint, options: LaunchOptions, engine: Engine) -> str | None:
    if options.quantize is not None:
        return options.quantize or None  # an empty string turns the manifest's hint off
    if checkpoint.manifest is None:
        return None
    hints = checkpoint.manifest.serving
    return hints.tgi_quantize if engine == "tgi" else hints.vllm_quantization


def _dtype(checkpoint: Checkpoint, options: LaunchOptions, quantize: str | None) -> str | None:
    if options.dtype is not None:
        return None if options.dtype == "auto" else options.dtype
    if quantize is None and checkpoint.manifest is not None:
        return checkpoint.manifest.serving.dtype
    return None


def _pairs(argv: list[str], pairs: tuple[tuple[str, object], ...]) -> list[str]:
    for flag, value in pairs:
        if value is not None:
            argv += [flag, str(value)]
    return argv


def tgi_argv(checkpoint: Checkpoint, options: LaunchOptions, port: int, *, master_port: int) -> list[str]:
    """``text-generation-launcher`` flags for ``checkpoint`` on ``port`` (``master_port`` for its shards' NCCL)."""
    quantize = _quantize(checkpoint, options, "tgi")
    dtype = _dtype(checkpoint, options, quantize)
    if quantize is not None and options.dtype not in (None, "auto"):
        raise ConfigError(f"TGI cannot take --dtype {options.dtype} with --quantize {quantize}; drop one of them")
    uds = Path(tempfile.gettempdir()) / f"comptrust-tgi-{port}"
    argv = [ENGINE_BINARIES["tgi"], "--model-id", str(checkpoint.path), "--hostname", options.host, "--port", str(port)]
    _pairs(
        argv,
        (
            ("--quantize", quantize),
            ("--dtype", dtype),
            ("--num-shard", shard_count(options)),
            ("--max-input-tokens", options.max_input_tokens),
            ("--max-total-tokens", options.max_total_tokens),
            ("--max-concurrent-requests", options.max_concurrent_requests),
        ),
    )
    argv += ["--shard-uds-path", str(uds), "--master-port", str(master_port)]
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    return [*argv, *options.extra_args]


def vllm_argv(checkpoint: Checkpoint, options: LaunchOptions, port: int) -> list[str]:
    """``vllm serve`` flags for ``checkpoint`` on ``port``."""
    if options.max_input_tokens is not None:
        logger.warning("vLLM has no separate input limit; --max-input-tokens is ignored (--max-total-tokens is not)")
    argv = [ENGINE_BINARIES["vllm"], "serve", str(checkpoint.path), "--host", options.host, "--port", str(port)]
    argv += ["--served-model-name", checkpoint.name]
    _pairs(
        argv,
        (
            ("--quantization", _quantize(checkpoint, options, "vllm")),
            ("--dtype", options.dtype if options.dtype != "auto" else None),
            ("--tensor-parallel-size", shard_count(options)),
            ("--max-model-len", options.max_total_tokens),
            ("--max-num-seqs", options.max_batch),
        ),
    )
    if options.trust_remote_code:
        argv.append("--trust-remote-code")
    return [*argv, *options.extra_args]


def engine_command(
    checkpoint: Checkpoint,
    options: LaunchOptions,
    port: int,
    *,
    master_port: int,
    environ: Mapping[str, str],
) -> EngineCommand:
    """The full command for ``options.engine``: argv, the environment it adds (GPUs, API key), its protocol.

    ``environ`` is where ``options.api_key_env`` is read from; a named variable that is unset is a ConfigError."""
    env: dict[str, str] = {}
    if options.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, options.gpus))
    if options.api_key_env:
        key = environ.get(options.api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env {options.api_key_env}: that environment variable is unset or empty")
        env[_API_KEY_VARS[options.engine]] = key
    if options.engine == "tgi":
        return EngineCommand(tuple(tgi_argv(checkpoint, options, port, master_port=master_port)), env, "tgi")
    if options.engine == "vllm":
        return EngineCommand(tuple(vllm_argv(checkpoint, options, port)), env, "openai")
    raise ConfigError(f"unknown engine {options.engine!r}; choose tgi or vllm")
