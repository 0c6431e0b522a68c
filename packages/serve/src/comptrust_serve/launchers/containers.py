"""What the docker launcher asks the engine for, as plain data: the image, the engine's command line, mounts, ports,
labels, GPU device requests, shm size and ulimits of the container that serves one checkpoint.

Nothing here talks to an engine, so every part is testable without one. The engines are entries of :data:`ENGINES`
(TGI and vLLM's OpenAI server); the command line each needs is derived from the checkpoint's manifest (its serving
hints: ``tgi_quantize`` / ``vllm_quantization``) and :class:`LaunchOptions`, flags given explicitly winning.
"""

from __future__ import annotations

import os
import re
import resource
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError
from comptrust_core.endpoint import Protocol

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers.base import LaunchOptions
from comptrust_serve.ports import url_for

__all__ = [
    "ENGINES",
    "LABEL",
    "MANAGED",
    "MODEL_MOUNT",
    "ContainerSpec",
    "EngineSpec",
    "Owner",
    "container_name",
    "container_spec",
    "container_ulimits",
    "current_owner",
    "engine_spec",
    "process_start_time",
    "tgi_args",
    "vllm_args",
]

# Where the checkpoint folder appears inside the container (read-only).
MODEL_MOUNT = "/comptrust/model"

# Every container comptrust starts carries MANAGED=true; the other labels describe it for `serve ls` / `serve stop`.
MANAGED = "comptrust.managed"
LABEL = {
    "name": "comptrust.name",
    "checkpoint": "comptrust.checkpoint",
    "engine": "comptrust.engine",
    "protocol": "comptrust.protocol",
    "url": "comptrust.url",
    "port": "comptrust.port",
    "gpus": "comptrust.gpus",
    "owner_host": "comptrust.owner.host",
    "owner_pid": "comptrust.owner.pid",
    "owner_start": "comptrust.owner.start",
}

# Ulimits set explicitly: at most these, and at most this process's hard limits; the variable overrides them.
ULIMIT_CAPS = {"nofile": 1 << 20, "nproc": 32768}
ULIMITS_ENV = "COMPTRUST_CONTAINER_ULIMITS"


def _quantize(checkpoint: Checkpoint, options: LaunchOptions, hint: str) -> str | None:
    if options.quantize is not None:
        return options.quantize or None  # an empty --quantize turns the manifest's hint off
    if checkpoint.manifest is None:
        return None
    value: str | None = getattr(checkpoint.manifest.serving, hint)
    return value


def _shards(options: LaunchOptions) -> int | None:
    """How many GPUs one model is split over: ``num_shard``, else the number of GPUs given when more than one."""
    if options.num_shard is not None:
        if options.num_shard < 1:
            raise ConfigError(f"--num-shard must be at least 1, not {options.num_shard}")
        if options.gpus and options.num_shard > len(options.gpus):
            raise ConfigError(
                f"--num-shard {options.num_shard} needs as many GPUs, but this server gets {len(options.gpus)} "
                f"({','.join(map(str, options.gpus))})"
            )
        return options.num_shard
    return len(options.gpus) if len(options.gpus) > 1 else None


def _flags(*pairs: tuple[str, str | int | None]) -> list[str]:
    """``[flag, value, ...]`` for the pairs whose value is set."""
    return [item for flag, value in pairs if value is not None for item in (flag, str(value))]


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be a positive number of tokens, not {value}")


def tgi_args(checkpoint: Checkpoint, options: LaunchOptions, container_port: int) -> list[str]:
    """``text-generation-launcher``'s arguments (the TGI image's entrypoint)."""
    _positive("--max-input-tokens", options.max_input_tokens)
    _positive("--max-total-tokens", options.max_total_tokens)
    max_in, max_total = options.max_input_tokens, options.max_total_tokens
    if max_in is not None and max_total is not None and max_in >= max_total:
        raise ConfigError(
            f"--max-input-tokens ({max_in}) must be below --max-total-tokens ({max_total}): "
            "TGI needs room for at least one new token"
        )
    args = ["--model-id", MODEL_MOUNT, "--hostname", "0.0.0.0", "--port", str(container_port)]
    args += ["--max-concurrent-requests", str(options.max_concurrent_requests)]
    # evaluate asks for prompt log-probabilities (decoder_input_details), which TGI 3 serves only when enabled.
    args.append("--enable-prefill-logprobs")
    quantize = _quantize(checkpoint, options, "tgi_quantize")
    if quantize is not None:
        args += ["--quantize", quantize]
    if options.dtype not in (None, "auto"):
        if options.dtype not in ("float16", "bfloat16"):
            raise ConfigError(f"TGI takes --dtype float16 or bfloat16 (or auto), not {options.dtype!r}")
        if quantize is not None:
            raise ConfigError(f"TGI cannot force --dtype {options.dtype} on a model quantized with {quantize!r}")
        args += ["--dtype", options.dtype]
    args += _flags(
        ("--max-input-tokens", options.max_input_tokens),
        ("--max-total-tokens", options.max_total_tokens),
        ("--num-shard", _shards(options)),
    )
    return args + (["--trust-remote-code"] if options.trust_remote_code else [])


def vllm_args(checkpoint: Checkpoint, options: LaunchOptions, container_port: int) -> list[str]:
    """``vllm serve``'s arguments (the vllm-openai image's entrypoint): the model folder comes first."""
    if options.max_input_tokens is not None:
        raise ConfigError(
            "vLLM has no separate input limit: drop --max-input-tokens and bound prompt + output with "
            "--max-total-tokens (vLLM's --max-model-len)"
        )
    _positive("--max-total-tokens", options.max_total_tokens)
    args = [MODEL_MOUNT, "--served-model-name", checkpoint.name, "--host", "0.0.0.0", "--port", str(container_port)]
    args += ["--max-num-seqs", str(options.max_batch)]
    args += _flags(
        ("--quantization", _quantize(checkpoint, options, "vllm_quantization")),
        ("--dtype", options.dtype),
        ("--max-model-len", options.max_total_tokens),
        ("--tensor-parallel-size", _shards(options)),
    )
    return args + (["--trust-remote-code"] if options.trust_remote_code else [])


@dataclass(frozen=True)
class EngineSpec:
    """One inference engine as a container: its image, the port it listens on inside, the API it speaks, the
    variable its API key goes in, environment defaults, and how to build its command line."""

    name: str
    default_image: str
    container_port: int
    protocol: Protocol
    api_key_var: str
    args: Callable[[Checkpoint, LaunchOptions, int], list[str]]
    env: Mapping[str, str] = field(default_factory=dict)


ENGINES: dict[str, EngineSpec] = {
    "tgi": EngineSpec(
        name="tgi",
        default_image="ghcr.io/huggingface/text-generation-inference:3.3.5",
        container_port=80,
        protocol="tgi",
        api_key_var="API_KEY",
        args=tgi_args,
        env={"HF_HUB_OFFLINE": "1", "USAGE_STATS": "off"},
    ),
    "vllm": EngineSpec(
        name="vllm",
        default_image="vllm/vllm-openai:v0.33.0",
        container_port=8000,
        protocol="openai",
        api_key_var="VLLM_API_KEY",
        args=vllm_args,
        env={"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    ),
}


def engine_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}") from None


@dataclass(frozen=True)
class Owner:
    """The process that started a container: it is an orphan once that process is gone."""

    host: str
    pid: int
    start: str  # the process's start time in clock ticks since boot ("" where unknown): tells a reused pid apart

    def labels(self) -> dict[str, str]:
        return {LABEL["owner_host"]: self.host, LABEL["owner_pid"]: str(self.pid), LABEL["owner_start"]: self.start}

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Owner | None:
        try:
            host, pid = labels[LABEL["owner_host"]], int(labels[LABEL["owner_pid"]])
        except (KeyError, ValueError):
            return None
        return cls(host, pid, labels.get(LABEL["owner_start"], ""))

    def is_gone(self) -> bool:
        """Whether this owner runs on this host and has exited (``False`` when that cannot be told from here)."""
        if self.host != socket.gethostname():
            return False
        started = process_start_time(self.pid)
        return started != self.start if self.start else started is None


def process_start_time(pid: int) -> str | None:
    """``pid``'s start time from /proc, ``None`` if no such (live) process; "" where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def current_owner() -> Owner:
    return Owner(socket.gethostname(), os.getpid(), process_start_time(os.getpid()) or "")


def container_name(checkpoint_name: str, port: int) -> str:
    """``comptrust-<name>-<port>``, with characters Docker does not allow in names replaced by '-'."""
    return f"comptrust-{re.sub(r'[^a-zA-Z0-9_.-]', '-', checkpoint_name)}-{port}"


def container_ulimits(environ: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """nofile and nproc (soft, hard) for the container, set explicitly: engines' own defaults can exceed what their
    daemon may grant (podman then cannot start the container). ``COMPTRUST_CONTAINER_ULIMITS`` (e.g.
    ``nofile=20000,nproc=4096:8192``) sets them; else this process's hard limits, capped."""
    limits: dict[str, tuple[int, int]] = {}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        cap = ULIMIT_CAPS[name]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        limits[name] = (value, value)
    setting = environ.get(ULIMITS_ENV, "").strip()
    for item in filter(None, (part.strip() for part in setting.split(","))):
        key, _, setting_value = item.partition("=")
        soft_text, _, hard_text = setting_value.partition(":")
        try:
            limits[key.strip()] = (int(soft_text), int(hard_text or soft_text))
        except ValueError:
            raise ConfigError(
                f"{ULIMITS_ENV}={setting!r} is not a list of NAME=SOFT[:HARD], e.g. nofile=20000,nproc=4096"
            ) from None
    return limits


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the engine is asked for; :meth:`create_kwargs` is the docker SDK's ``containers.create`` call."""

    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    labels: dict[str, str]
    ports: dict[str, tuple[str, int]]
    model_source: str
    gpus: tuple[int, ...]
    shm_size: str
    ulimits: dict[str, tuple[int, int]]

    def create_kwargs(self) -> dict[str, Any]:
        from docker.types import DeviceRequest, Mount, Ulimit

        device_requests = []
        if self.gpus:
            ids = [str(g) for g in self.gpus]
            device_requests.append(DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu"]]))
        return {
            "image": self.image,
            "command": self.command,
            "name": self.name,
            "environment": self.environment,
            "labels": self.labels,
            "ports": self.ports,
            "mounts": [Mount(target=MODEL_MOUNT, source=self.model_source, type="bind", read_only=True)],
            "device_requests": device_requests,
            "shm_size": self.shm_size,
            "ulimits": [Ulimit(name=k, soft=soft, hard=hard) for k, (soft, hard) in self.ulimits.items()],
            "detach": True,
        }


def container_spec(
    checkpoint: Checkpoint,
    options: LaunchOptions,
    port: int,
    *,
    owner: Owner,
    environ: Mapping[str, str] | None = None,
) -> ContainerSpec:
    """The container serving ``checkpoint`` on host port ``port`` (bound to ``options.host``)."""
    engine = engine_spec(options.engine)
    environ = os.environ if environ is None else environ
    env = {**engine.env, **options.env}
    if options.api_key_env is not None:
        key = environ.get(options.api_key_env)
        if not key:
            raise ConfigError(f"environment variable {options.api_key_env} (named by --api-key-env) is not set")
        env[engine.api_key_var] = key
    labels = {
        MANAGED: "true",
        LABEL["name"]: checkpoint.name,
        LABEL["checkpoint"]: str(checkpoint.path),
        LABEL["engine"]: engine.name,
        LABEL["protocol"]: engine.protocol,
        LABEL["url"]: url_for(options.host, port),
        LABEL["port"]: str(port),
        LABEL["gpus"]: ",".join(map(str, options.gpus)),
        **owner.labels(),
    }
    return ContainerSpec(
        name=container_name(checkpoint.name, port),
        image=options.image or engine.default_image,
        command=[*engine.args(checkpoint, options, engine.container_port), *options.extra_args],
        environment=env,
        labels=labels,
        ports={f"{engine.container_port}/tcp": (options.host, port)},
        model_source=str(checkpoint.path),
        gpus=options.gpus,
        shm_size=options.shm_size,
        ulimits=container_ulimits(environ),
    )
