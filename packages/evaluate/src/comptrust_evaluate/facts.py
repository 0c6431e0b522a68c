"""Benchmark facts (prompt strings, keyword lists, label words), read from one data file per benchmark.

The files live in ``comptrust_evaluate/data/<benchmark>.json``; each says where its strings come from (``_source``).
Code reads them through :class:`Facts`, whose accessors check types, so a broken file fails loudly and early.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Facts", "benchmark_facts"]


class Facts:
    """Typed, read-only access into a nested JSON document by a path of keys and indices."""

    def __init__(self, data: Any, where: str) -> None:
        self._data = data
        self._where = where

    def _at(self, path: tuple[str | int, ...]) -> Any:
        node = self._data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                raise KeyError(f"{self._where}: no entry at {'/'.join(map(str, path))}") from None
        return node

    def _fail(self, path: tuple[str | int, ...], want: str) -> TypeError:
        return TypeError(f"{self._where}: entry {'/'.join(map(str, path))} is not {want}")

    def sub(self, *path: str | int) -> Facts:
        return Facts(self._at(path), f"{self._where}:{'/'.join(map(str, path))}")

    def text(self, *path: str | int) -> str:
        value = self._at(path)
        if not isinstance(value, str):
            raise self._fail(path, "a string")
        return value

    def integer(self, *path: str | int) -> int:
        value = self._at(path)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(path, "an integer")
        return value

    def number(self, *path: str | int) -> float:
        value = self._at(path)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._fail(path, "a number")
        return float(value)

    def texts(self, *path: str | int) -> tuple[str, ...]:
        value = self._at(path)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(path, "a list of strings")
        return tuple(value)

    def text_map(self, *path: str | int) -> dict[str, str]:
        value = self._at(path)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(path, "a mapping of strings")
        return dict(value)

    def keys(self, *path: str | int) -> list[str]:
        value = self._at(path)
        if not isinstance(value, dict):
            raise self._fail(path, "a mapping")
        return [k for k in value if not k.startswith("_")]

    def raw(self, *path: str | int) -> Any:
        return self._at(path)


@cache
def benchmark_facts(benchmark: str) -> Facts:
    """The facts of ``benchmark`` (e.g. ``"decodingtrust"``), loaded once per process."""
    name = f"{benchmark}.json"
    text = (resources.files("comptrust_evaluate") / "data" / name).read_text(encoding="utf-8")
    return Facts(json.loads(text), name)
