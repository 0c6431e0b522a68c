"""A small registry: names map to factories, registered by a decorator; built-ins are imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from comptrust_core import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry. ``builtin`` maps names to the module that registers them, imported only when asked for."""

    def __init__(self, kind: str, builtin: Mapping[str, str]) -> None:
        self._kind = kind
        self._builtin = dict(builtin)
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self._kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._builtin:
            importlib.import_module(self._builtin[name])
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self._kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(set(self._builtin) | set(self._entries))
