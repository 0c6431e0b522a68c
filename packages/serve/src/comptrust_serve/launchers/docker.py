"""The ``docker`` launcher: one TGI or vLLM container per checkpoint, through the Docker Engine API (Docker, or podman's
``podman system service``), with the docker SDK: no shell strings.

What the container gets (image, command line, mounts, ports, labels, GPUs) is :mod:`.containers`. Here: connecting
to the engine, pulling a missing image, starting, following the logs into a file, waiting for ``/health``, and
teardown. Nothing is left running: :meth:`DockerHandle.stop` stops and removes the container (``serve`` calls it on
Ctrl-C and SIGTERM); a small watchdog process (:mod:`.reaper`), holding a pipe from the launching process, removes
it when that process dies without stopping it (a crash, SIGKILL); and each launch removes containers whose
launching process is gone from this host (``serve ls`` shows them as orphaned, ``serve stop`` takes them too).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from comptrust_core import ConfigError
from comptrust_core.endpoint import Endpoint

from comptrust_serve.checkpoint import Checkpoint
from comptrust_serve.launchers import register_launcher
from comptrust_serve.launchers.base import LaunchOptions, ServerHandle, ServerStartError, Startup
from comptrust_serve.launchers.containers import (
    LABEL,
    MANAGED,
    ContainerSpec,
    Owner,
    container_spec,
    current_owner,
)
from comptrust_serve.launchers.engines import check_engine_options, engine_spec
from comptrust_serve.launchers.process import log_path_for, read_tail
from comptrust_serve.launchers.reaper import DONE
from comptrust_serve.launchers.removal import explain, remove_container

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = [
    "DockerHandle",
    "DockerLauncher",
    "connect",
    "container_display_name",
    "engine_address",
    "managed_containers",
    "remove_container",
    "sweep_orphans",
]

logger = logging.getLogger(__name__)

_CLIENTS: dict[str, DockerClient] = {}
_CLIENTS_LOCK = threading.Lock()
_PODMAN_SOCKETS = ("/run/podman/podman.sock", "{xdg}/podman/podman.sock")
_START_HINT = (
    "start Docker, or podman's Docker API (`podman system service --time=0 unix:///run/podman/podman.sock`) "
    "and point DOCKER_HOST at its socket (DOCKER_HOST=unix:///run/podman/podman.sock)"
)


def engine_address() -> str:
    """Where the engine is expected: ``DOCKER_HOST``, else Docker's socket, else a podman socket that exists."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if Path("/var/run/docker.sock").exists():
        return "unix:///var/run/docker.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    for candidate in (p.format(xdg=xdg) for p in _PODMAN_SOCKETS):
        if Path(candidate).exists():
            return f"unix://{candidate}"
    return "unix:///var/run/docker.sock"


def connect(base_url: str | None = None, timeout_s: float = 60.0) -> DockerClient:
    """A client for the engine at ``base_url`` (default :func:`engine_address`) that answered a ping; else a
    :class:`ConfigError` saying what is missing. Clients are kept per address: the first call asks the engine for its
    API version, which podman takes a second to answer."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise ConfigError("the docker Python SDK is not installed; `pip install docker` (>=7.1)") from None
    address = base_url or engine_address()
    try:
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(address)
            if client is None:
                client = _CLIENTS[address] = docker.DockerClient(base_url=address, timeout=int(timeout_s))
        client.ping()
    except (DockerException, OSError) as exc:
        with _CLIENTS_LOCK:
            _CLIENTS.pop(address, None)
        reason = " ".join(str(exc).split())
        raise ConfigError(f"no Docker engine answers at {address} ({reason}); {_START_HINT}") from None
    return client


def managed_containers(client: DockerClient) -> list[dict[str, Any]]:
    """Every container comptrust started on the engine, as the engine lists them (``Id``, ``Names``, ``Labels``,
    ``State``...): one call, so that a container removed meanwhile cannot make the listing fail."""
    found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": f"{MANAGED}=true"})
    return found


def container_display_name(listed: dict[str, Any]) -> str:
    names = listed.get("Names") or [str(listed.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")


def sweep_orphans(client: DockerClient) -> list[str]:
    """Remove this host's comptrust containers whose launching process has exited; their names."""
    swept = []
    for listed in managed_containers(client):
        owner = Owner.from_labels(listed.get("Labels") or {})
        if owner is not None and owner.is_gone():
            name = container_display_name(listed)
            logger.warning("removing orphaned container %s (its serve process %d is gone)", name, owner.pid)
            remove_container(client, listed["Id"], stop_timeout_s=2)
            swept.append(name)
    return swept


def _ensure_image(client: DockerClient, image: str) -> None:
    """Pull ``image`` unless the engine has it; a :class:`ConfigError` with the registry's reason if that fails."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    logger.info("pulling %s (this can take minutes)", image)
    errors: list[str] = []
    try:
        for event in client.api.pull(image, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                errors.append(" ".join(str(event["error"]).split()))
    except APIError as exc:
        errors.append(explain(exc))
    try:
        client.images.get(image)
    except ImageNotFound:
        reason = "; ".join(errors) or "the engine gave no reason"
        raise ConfigError(
            f"image {image} is not on the engine and could not be pulled ({reason}); "
            "check the name (--image), or pull or build it first"
        ) from None


def _spawn_reaper(base_url: str, container_id: str, stop_timeout_s: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "comptrust_serve.launchers.reaper", base_url, container_id, str(stop_timeout_s)]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


class DockerHandle(ServerHandle):
    """A server running in a container; its output is followed into ``log_path``."""

    def __init__(
        self,
        endpoint: Endpoint,
        container: Container,
        log_path: Path,
        reaper: subprocess.Popen[bytes] | None,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.container = container
        self.log_path: Path = log_path
        self.stop_timeout_s = stop_timeout_s
        self._reaper = reaper
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._follower = threading.Thread(target=self._follow, name=f"logs-{container.name}", daemon=True)

    def follow_logs(self) -> None:
        """Copy the container's output into ``log_path`` from now on (call once, after starting it)."""
        self._follower.start()

    def _follow(self) -> None:
        with suppress(Exception), self.log_path.open("ab") as log:
            for chunk in self.container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()

    def _state(self) -> dict[str, Any]:
        from docker.errors import NotFound

        try:
            self.container.reload()
        except NotFound:
            return {"Status": "removed"}
        state: dict[str, Any] = self.container.attrs.get("State", {})
        return state

    def is_alive(self) -> bool:
        return not self._stopped and self._state().get("Status") == "running"

    def log_tail(self, lines: int = 30) -> str:
        return read_tail(self.log_path, lines)

    def _with_tail(self, message: str) -> str:
        self._join_follower()  # the container's last words
        return super()._with_tail(message)

    def _starting_as(self) -> str:
        return f"container {self.container.name} for {self.endpoint.name}"

    def _exit_code(self) -> int | Literal[False] | None:
        state = self._state()
        return False if state.get("Status") in ("created", "running", "restarting") else state.get("ExitCode")

    def stop(self) -> None:
        """Stop and remove the container (SIGTERM, SIGKILL after ``stop_timeout_s``); safe to call more than once,
        and from several threads (the health wait and a cancelled fleet may both stop it)."""
        with self._stop_lock:
            self._stop()

    def _stop(self) -> None:
        if not self._stopped:
            logger.info("stopping %s (container %s)", self.endpoint.name, self.container.name)
            remove_container(self.container.client, self.container.id, self.stop_timeout_s)
            self._stopped = True
        if self._reaper is not None:
            with suppress(OSError):
                if self._reaper.stdin is not None:
                    self._reaper.stdin.write(DONE)
                    self._reaper.stdin.close()
            with suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=self.stop_timeout_s + 5)
            self._reaper = None
        self._join_follower()

    def _join_follower(self) -> None:
        if self._follower.is_alive():
            self._follower.join(timeout=2.0)


@register_launcher("docker")
class DockerLauncher:
    """TGI or vLLM (``options.engine``) in a container per checkpoint, on the engine at :func:`engine_address`."""

    name: ClassVar[str] = "docker"

    def unavailable_reason(self) -> str | None:
        try:
            connect()
        except ConfigError as exc:
            return str(exc)
        return None

    def preflight(self, options: LaunchOptions) -> None:
        """Raise :class:`ConfigError` on engine flags that cannot work, or when the image is neither on the engine nor
        pullable (checked, and pulled, once for a whole fleet, before any start)."""
        check_engine_options(options)
        _ensure_image(connect(), options.image or engine_spec(options.engine).default_image)

    def launch(
        self, checkpoint: Checkpoint, options: LaunchOptions, port: int, *, startup: Startup | None = None
    ) -> ServerHandle:
        from docker.errors import APIError

        spec = container_spec(checkpoint, options, port, owner=current_owner())
        if not options.gpus:
            logger.warning("%s: no GPUs given; the container sees none", checkpoint.name)
        address = engine_address()
        client = connect(address)
        sweep_orphans(client)
        _ensure_image(client, spec.image)
        if startup is not None:
            startup.check(checkpoint.name)  # called off while pulling: create nothing
        try:
            container = client.containers.create(**spec.create_kwargs())
        except APIError as exc:
            raise ServerStartError(f"the engine refused to create {spec.name}: {_hint(exc, spec)}") from None
        reaper = _spawn_reaper(address, container.id or spec.name, options.stop_timeout_s)
        endpoint = _endpoint(checkpoint, options, spec, container)
        handle = DockerHandle(endpoint, container, _log_path(options, spec, port), reaper, options.stop_timeout_s)
        try:
            if startup is not None:
                startup.spawned(handle)
            try:
                container.start()
            except APIError as exc:
                raise ServerStartError(f"the engine could not start {spec.name}: {_hint(exc, spec)}") from None
            handle.follow_logs()
            handle.wait_healthy(options.startup_timeout_s, interval_s=0.25, startup=startup)
        except BaseException:
            handle.stop()
            raise
        return handle


def _hint(exc: BaseException, spec: ContainerSpec) -> str:
    text = explain(exc)
    if "device driver" in text or "nvidia" in text.lower():
        text += "; GPUs in containers need the NVIDIA Container Toolkit (or CDI) on the engine's host"
    elif "address already in use" in text or "port is already allocated" in text:
        text += "; pick another --port"
    elif "Conflict" in text or "already in use" in text:
        text += f"; remove the old one with `serve stop {spec.name}`"
    return text


def _log_path(options: LaunchOptions, spec: ContainerSpec, port: int) -> Path:
    return log_path_for(options.log_dir, spec.labels[LABEL["name"]], port)


def _endpoint(checkpoint: Checkpoint, options: LaunchOptions, spec: ContainerSpec, container: Container) -> Endpoint:
    engine = engine_spec(options.engine)
    return Endpoint(
        name=checkpoint.name,
        url=spec.labels[LABEL["url"]],
        protocol=engine.protocol,
        model=checkpoint.name,
        api_key_env=options.api_key_env,
        checkpoint=str(checkpoint.path),
        manifest=checkpoint.manifest,
        launcher="docker",
        handle=container.id,
        engine=options.engine,
        dtype=options.dtype,
    )
