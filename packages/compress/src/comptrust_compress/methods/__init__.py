"""The compression methods: one module per method, each registering itself with :func:`register_method`.

Built-in methods are listed here by module and imported only when first asked for, so importing this package
is cheap and an optional backend's absence only matters to the method that needs it.
"""

from __future__ import annotations

import importlib

from comptrust_core import ConfigError

from comptrust_compress.methods.base import CompressionMethod, register_method, registered_methods

__all__ = ["CompressionMethod", "available_methods", "get_method", "method_names", "register_method"]

_BUILTIN: dict[str, str] = {
    "awq": "comptrust_compress.methods.awq",
    "dense": "comptrust_compress.methods.dense",
    "gptq": "comptrust_compress.methods.gptq",
    "magnitude": "comptrust_compress.methods.magnitude",
    "rtn": "comptrust_compress.methods.rtn",
    "sparsegpt": "comptrust_compress.methods.sparsegpt",
    "wanda": "comptrust_compress.methods.wanda",
}


def method_names() -> list[str]:
    """Every known method name, available here or not."""
    return sorted(set(_BUILTIN) | set(registered_methods()))


def _load(name: str) -> type[CompressionMethod] | None:
    if name not in registered_methods() and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    return registered_methods().get(name)


def available_methods() -> list[str]:
    """The method names that can run in this environment."""
    names = []
    for name in method_names():
        cls = _load(name)
        if cls is not None and cls().unavailable_reason() is None:
            names.append(name)
    return names


def get_method(name: str) -> CompressionMethod:
    """The method registered as ``name``; an unknown or unavailable one is a :class:`ConfigError` listing the rest."""
    cls = _load(name)
    if cls is None:
        raise ConfigError(f"unknown method {name!r}; available methods: {', '.join(available_methods())}")
    method = cls()
    reason = method.unavailable_reason()
    if reason is not None:
        raise ConfigError(
            f"method {name!r} is not available here ({reason}); available methods: {', '.join(available_methods())}"
        )
    return method
