"""Launchers: one module per way of running a server, each a registry entry.

A launcher is a class with a ``name``, ``unavailable_reason()`` and ``launch(checkpoint, options, port)``, registered
with ``@register_launcher("name")``. Built-in launchers (``docker``, ``process``, ``embedded``) are imported only when
first asked for, and only those whose module this installation has are listed; other packages can add theirs through
the ``comptrust.launchers`` entry-point group (the entry point names the module to import). ``--launcher auto`` picks
docker when a Docker engine and a GPU are there, else embedded (:func:`pick_auto` says why it skipped the others).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from comptrust_core import ConfigError

from comptrust_serve.launchers.base import Launcher, LaunchOptions, ServerHandle, ServerStartError

__all__ = [
    "AUTO_ORDER",
    "LaunchOptions",
    "Launcher",
    "ServerHandle",
    "ServerStartError",
    "get_launcher",
    "launcher_names",
    "pick_auto",
    "register_launcher",
    "resolve_launcher",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "comptrust.launchers"

# Built-in launchers: name -> module that registers it on import.
_BUILTIN: dict[str, str] = {
    "docker": "comptrust_serve.launchers.docker",
    "embedded": "comptrust_serve.launchers.embedded",
    "process": "comptrust_serve.launchers.process",
}

# What `--launcher auto` tries, best first: containers when a Docker engine and GPUs are there, else embedded.
AUTO_ORDER: tuple[str, ...] = ("docker", "embedded")

# Launchers that `--launcher auto` picks only when this machine has a GPU.
_AUTO_NEEDS_GPU: frozenset[str] = frozenset({"docker"})

_REGISTRY: dict[str, Callable[[], Launcher]] = {}

F = TypeVar("F", bound=Callable[[], Launcher])


def register_launcher(name: str) -> Callable[[F], F]:
    """Class (or factory) decorator: make the launcher available as ``name``."""

    def decorate(factory: F) -> F:
        _REGISTRY[name] = factory
        return factory

    return decorate


def _plugin_modules() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def launcher_names() -> list[str]:
    """Every launcher name this installation knows (built-in modules present, registered, and from entry points)."""
    builtin = {name for name, module in _BUILTIN.items() if _installed(module)}
    return sorted({*builtin, *_REGISTRY, *_plugin_modules()})


def get_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``, importing its module if needed."""
    if name not in _REGISTRY:
        module = _BUILTIN.get(name) or _plugin_modules().get(name)
        if module is None or not _installed(module):
            known = ", ".join(["auto", *launcher_names()])
            raise ConfigError(f"unknown launcher {name!r}; choose one of: {known}")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise ConfigError(f"module {module} did not register a launcher named {name!r}")
    return _REGISTRY[name]()


def _auto_reason(name: str, gpu_count: Callable[[], int]) -> tuple[Launcher | None, str | None]:
    """The launcher ``name`` and ``None`` when ``auto`` may pick it, else ``None`` and why not."""
    try:
        launcher = get_launcher(name)
    except (ConfigError, ImportError) as exc:
        return None, f"not available in this installation ({exc})"
    reason = launcher.unavailable_reason()
    if reason is None and name in _AUTO_NEEDS_GPU and gpu_count() == 0:
        reason = "no NVIDIA GPU found (nvidia-smi lists none)"
    return (launcher, None) if reason is None else (None, reason)


def pick_auto(gpu_count: Callable[[], int] | None = None) -> tuple[Launcher, list[str]]:
    """What ``--launcher auto`` picks: the first of :data:`AUTO_ORDER` that can run here, and why each one before it
    could not (``"docker: no Docker engine ..."``). ``gpu_count`` defaults to asking ``nvidia-smi``."""
    if gpu_count is None:
        from comptrust_serve.placement import detect_gpus

        def gpu_count() -> int:
            return len(detect_gpus() or ())

    skipped: list[str] = []
    for candidate in AUTO_ORDER:
        launcher, reason = _auto_reason(candidate, gpu_count)
        if launcher is not None:
            logger.info("--launcher auto picked %s", candidate)
            return launcher, skipped
        skipped.append(f"{candidate}: {reason}")
    raise ConfigError("no launcher can run here (" + "; ".join(skipped) + ")")


def resolve_launcher(name: str) -> Launcher:
    """``auto`` → :func:`pick_auto`'s choice; any other name → that launcher, provided it can run here (else a
    :class:`ConfigError` saying why not)."""
    if name == "auto":
        return pick_auto()[0]
    launcher = get_launcher(name)
    reason = launcher.unavailable_reason()
    if reason is not None:
        raise ConfigError(f"launcher {name!r} cannot run here: {reason}")
    return launcher
