"""Launchers: one module per way of running a server, each a registry entry.

A launcher is a class with a ``name``, ``unavailable_reason()`` and ``launch(checkpoint, options, port)``, registered
with ``@register_launcher("name")``. Built-in launchers are imported only when first asked for; other packages can add
theirs through the ``comptrust.launchers`` entry-point group (the entry point names the module to import).
"""

from __future__ import annotations

import importlib
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
    "register_launcher",
    "resolve_launcher",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "comptrust.launchers"

# Built-in launchers: name -> module that registers it on import.
_BUILTIN: dict[str, str] = {
    "docker": "comptrust_serve.launchers.docker",
    "embedded": "comptrust_serve.launchers.embedded",
}

# What `--launcher auto` tries, best first.
AUTO_ORDER: tuple[str, ...] = ("embedded",)

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


def launcher_names() -> list[str]:
    """Every launcher name this installation knows (built-in, registered, and from entry points)."""
    return sorted({*_BUILTIN, *_REGISTRY, *_plugin_modules()})


def get_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``, importing its module if needed."""
    if name not in _REGISTRY:
        module = _BUILTIN.get(name) or _plugin_modules().get(name)
        if module is None:
            known = ", ".join(["auto", *launcher_names()])
            raise ConfigError(f"unknown launcher {name!r}; choose one of: {known}")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise ConfigError(f"module {module} did not register a launcher named {name!r}")
    return _REGISTRY[name]()


def resolve_launcher(name: str) -> Launcher:
    """``auto`` → the first launcher of :data:`AUTO_ORDER` that can run here; any other name → that launcher,
    provided it can run here (else a :class:`ConfigError` saying why not)."""
    if name != "auto":
        launcher = get_launcher(name)
        reason = launcher.unavailable_reason()
        if reason is not None:
            raise ConfigError(f"launcher {name!r} cannot run here: {reason}")
        return launcher
    reasons: list[str] = []
    for candidate in AUTO_ORDER:
        launcher = get_launcher(candidate)
        reason = launcher.unavailable_reason()
        if reason is None:
            logger.info("--launcher auto picked %s", candidate)
            return launcher
        reasons.append(f"{candidate}: {reason}")
    raise ConfigError("no launcher can run here (" + "; ".join(reasons) + ")")
