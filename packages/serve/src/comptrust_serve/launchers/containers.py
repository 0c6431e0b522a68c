"""What the docker launcher asks the engine for, as plain data: the image, the engine's command line, mounts, ports,
labels, GPU device requests, shm size and ulimits of the container that serves one checkpoint.

Nothing here talks to an engine, so every part is testable without one. The engines (TGI and vLLM's OpenAI server)
and their command lines are :mod:`.engines`, shared with the process launcher: here the engine sees the checkpoint
at :data:`MODEL_MOUNT`, binds 0.0.0.0 on its image's port inside the container, and that port is mapped to
``options.host:port`` outside.
"""

from __future__ import annotations

import os
import re
import resource
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_core import ConfigError

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers.base import LaunchOptions
from comptrust_serve.launchers.engines import Site, api_key_environment, engine_args, engine_spec
from comptrust_serve.ports import url_for

__all__ = [
    "LABEL",
    "MANAGED",
    "MODEL_MOUNT",
    "ContainerSpec",
    "Owner",
    "container_name",
    "container_spec",
    "container_ulimits",
    "current_owner",
    "process_start_time",
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
    env = {**engine.container_env, **options.env, **api_key_environment(options, environ)}
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
        command=engine_args(checkpoint, options, Site(MODEL_MOUNT, "0.0.0.0", engine.container_port)),
        environment=env,
        labels=labels,
        ports={f"{engine.container_port}/tcp": (options.host, port)},
        model_source=str(checkpoint.path),
        gpus=options.gpus,
        shm_size=options.shm_size,
        ulimits=container_ulimits(environ),
    )
