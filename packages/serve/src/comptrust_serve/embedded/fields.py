"""Typed reads of JSON request fields; every problem becomes an :class:`InvalidRequest` naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comptrust_serve.embedded.types import InvalidRequest, Limits

__all__ = [
    "as_object",
    "new_token_budget",
    "opt_bool",
    "opt_float",
    "opt_int",
    "opt_seed",
    "opt_str",
    "opt_str_list",
    "reject_unsupported",
]

_U64 = 2**64


def as_object(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"`{what}` must be a JSON object")
    return value


def opt_bool(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"`{key}` must be true or false")
    return value


def opt_int(obj: Mapping[str, Any], key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidRequest(f"`{key}` must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"`{key}` must be >= {minimum}. Given: {value}")
    if maximum is not None and value > maximum:
        raise InvalidRequest(f"`{key}` must be <= {maximum}. Given: {value}")
    return value


def opt_seed(obj: Mapping[str, Any], key: str = "seed") -> int | None:
    return opt_int(obj, key, minimum=0, maximum=_U64 - 1)


def opt_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"`{key}` must be a number")
    return float(value)


def opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"`{key}` must be a string")
    return value


def opt_str_list(obj: Mapping[str, Any], key: str, *, max_items: int, allow_str: bool = False) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if allow_str and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"`{key}` must be a list of strings")
    if len(value) > max_items:
        raise InvalidRequest(f"`{key}` supports up to {max_items} stop sequences. Given: {len(value)}")
    if any(not v for v in value):
        raise InvalidRequest(f"`{key}` must not hold empty strings")
    return tuple(value)


def reject_unsupported(obj: Mapping[str, Any], neutral: Mapping[str, object]) -> None:
    """Refuse parameters this server does not implement, unless they hold their no-op value (or null)."""
    for key, noop in neutral.items():
        value = obj.get(key)
        if value is None or value == noop or (isinstance(value, list | dict | str) and not value):
            continue
        raise InvalidRequest(f"`{key}` = {value!r} is not supported by the comptrust embedded server")


def new_token_budget(prompt_tokens: int, max_new_tokens: int | None, limits: Limits, key: str) -> int:
    """Check the prompt's length and return how many tokens may be generated (``key`` names the request field)."""
    if prompt_tokens == 0:
        raise InvalidRequest("`inputs` cannot be empty")
    if prompt_tokens > limits.max_input_tokens:
        raise InvalidRequest(f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {prompt_tokens}")
    room = limits.max_total_tokens - prompt_tokens
    if max_new_tokens is None:
        return max(1, min(limits.max_new_tokens, room))
    if max_new_tokens > room:
        raise InvalidRequest(
            f"`inputs` tokens + `{key}` must be <= {limits.max_total_tokens}. "
            f"Given: {prompt_tokens} `inputs` tokens and {max_new_tokens} `{key}`"
        )
    return max_new_tokens
