"""Tasks, a registry: one module per DecodingTrust perspective, ``mmlu``, the Beyond-Perplexity tasks (``perplexity``,
``bbq``, ``dialect_gap``), plus ``custom`` for a user's own prompts."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from comptrust_core import DECODINGTRUST_PERSPECTIVES

from comptrust_evaluate._registry import Registry
from comptrust_evaluate.tasks.base import (
    VARIANTS,
    DataSource,
    Item,
    Outcome,
    ScenarioOptions,
    Task,
    derive_seed,
    score_fields,
)

__all__ = [
    "VARIANTS",
    "DataSource",
    "Item",
    "Outcome",
    "ScenarioOptions",
    "Task",
    "derive_seed",
    "get_task",
    "score_fields",
    "task",
    "task_names",
]

_BUILTIN = (*DECODINGTRUST_PERSPECTIVES, "custom", "mmlu", "perplexity", "bbq", "dialect_gap")
TASKS: Registry[type[Task[Any, Any]]] = Registry(
    "task", {name: f"comptrust_evaluate.tasks.{name}" for name in _BUILTIN}
)


def task(name: str) -> Callable[[type[Task[Any, Any]]], type[Task[Any, Any]]]:
    """Register a :class:`Task` subclass under ``name``."""
    return TASKS.register(name)


@cache
def get_task(name: str) -> Task[Any, Any]:
    return TASKS.get(name)()


def task_names() -> list[str]:
    return TASKS.names()
