"""A user's own prompts file (``--prompts FILE.jsonl``): one JSON object per line, validated line by line.

Each line: ``id`` (string or integer, unique), exactly one of ``messages`` (a list of ``{"role", "content"}``)
or ``prompt`` (a string), and optionally ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``,
``stop`` (a string or a list), ``logprobs`` and ``n`` (samples, each its own request). Blank lines are skipped.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comptrust_core import ChatMessage, ConfigError, GenerationParams, RequestSpec
from pydantic import ValidationError

__all__ = ["PromptEntry", "load_prompts_file"]

_PARAMS = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs")
_KEYS = {"id", "messages", "prompt", "n", *_PARAMS}


@dataclass(frozen=True, slots=True)
class PromptEntry:
    """One line of a prompts file, validated. Only its parts are kept (the file's lines share one parameters object);
    :attr:`request` builds the request from them, so a million-line file costs a few hundred bytes a line."""

    item_id: str
    prompt: str | None
    messages: tuple[ChatMessage, ...] | None
    params: GenerationParams
    n: int
    line: int

    @property
    def request(self) -> RequestSpec:
        """The line's request (its parts were validated when the file was read: this is cheap, and faster than
        ``model_construct``)."""
        return RequestSpec(messages=self.messages, prompt=self.prompt, params=self.params)


def _fail(path: Path, lineno: int, message: str) -> ConfigError:
    return ConfigError(f"prompts file {path}, line {lineno}: {message}")


def _messages(path: Path, lineno: int, value: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(path, lineno, '\'messages\' must be a non-empty list of {"role", "content"} objects')
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise _fail(path, lineno, f"messages[{i}] must be an object with exactly 'role' and 'content'")
        if msg["role"] not in ("system", "user", "assistant") or not isinstance(msg["content"], str):
            raise _fail(path, lineno, f"messages[{i}] needs role system|user|assistant and a string content")
        out.append(ChatMessage(role=msg["role"], content=msg["content"]))
    return tuple(out)


_PARAMS_KEY = json.JSONEncoder(sort_keys=True)


def _params(path: Path, lineno: int, raw: dict[str, Any], known: dict[str, GenerationParams]) -> GenerationParams:
    """The validated parameters of one line; lines with the same parameters (most of a file) share one object."""
    try:
        key = _PARAMS_KEY.encode(raw) if raw else ""
    except (TypeError, ValueError):  # not JSON-able as given: let validation say what is wrong
        key = None
    if key is not None and key in known:
        return known[key]
    try:
        params = GenerationParams.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _fail(path, lineno, f"bad {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if key is not None:
        known[key] = params
    return params


def _entry(path: Path, lineno: int, obj: Any, known: dict[str, GenerationParams]) -> PromptEntry:
    if type(obj) is dict and len(obj) == 2:  # the common line, {"id": ..., "prompt": "..."}: checked in few steps
        raw_id, prompt = obj.get("id"), obj.get("prompt")
        if type(raw_id) in (int, str) and raw_id != "" and type(prompt) is str:
            return PromptEntry(str(raw_id), prompt, None, _params(path, lineno, {}, known), 1, lineno)
    if not isinstance(obj, dict):
        raise _fail(path, lineno, "expected a JSON object")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise _fail(path, lineno, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    raw_id = obj.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or str(raw_id) == "":
        raise _fail(path, lineno, "missing or empty 'id' (a string or an integer)")
    has_messages, has_prompt = "messages" in obj, "prompt" in obj
    if has_messages == has_prompt:
        raise _fail(path, lineno, "needs exactly one of 'messages' or 'prompt'")
    n = obj.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _fail(path, lineno, "'n' must be a positive integer")
    raw_params = {k: obj[k] for k in _PARAMS if k in obj}
    if isinstance(raw_params.get("stop"), str):
        raw_params["stop"] = [raw_params["stop"]]
    params = _params(path, lineno, raw_params, known)
    if has_prompt:
        if not isinstance(obj["prompt"], str):
            raise _fail(path, lineno, "'prompt' must be a string")
        return PromptEntry(str(raw_id), obj["prompt"], None, params, n, lineno)
    return PromptEntry(str(raw_id), None, _messages(path, lineno, obj["messages"]), params, n, lineno)


# The files read last, by resolved path, with the (mtime, size) they were read at: a run enumerates its plan twice
# (counting, then sending), and a file that has not changed is not parsed and validated again.
_CACHE: OrderedDict[Path, tuple[tuple[int, int], tuple[PromptEntry, ...]]] = OrderedDict()
_CACHE_FILES = 4
_CACHE_LOCK = threading.Lock()


def load_prompts_file(path: Path) -> tuple[PromptEntry, ...]:
    """Read and validate ``path``; the first problem is a :class:`ConfigError` naming the file and line. An unchanged
    file read again (same size and modification time) gives the entries read before."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"prompts file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"prompts file {path} cannot be read: {exc}") from None
    where, version = path.resolve(), (stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(where)
        if cached is not None and cached[0] == version:
            _CACHE.move_to_end(where)
            return cached[1]
    entries = _read(path)
    with _CACHE_LOCK:
        _CACHE[where] = (version, entries)
        while len(_CACHE) > _CACHE_FILES:
            _CACHE.popitem(last=False)
    return entries


def _read(path: Path) -> tuple[PromptEntry, ...]:
    entries: list[PromptEntry] = []
    seen: dict[str, int] = {}
    known: dict[str, GenerationParams] = {}
    try:
        with path.open("rb") as f:  # line by line: the whole text is never held beside the entries
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _fail(path, lineno, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _fail(path, lineno, f"invalid JSON ({exc.msg}, column {exc.colno})") from None
                entry = _entry(path, lineno, obj, known)
                if entry.item_id in seen:
                    raise _fail(path, lineno, f"duplicate id {entry.item_id!r} (first on line {seen[entry.item_id]})")
                seen[entry.item_id] = lineno
                entries.append(entry)
    except FileNotFoundError:
        raise ConfigError(f"prompts file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"prompts file {path} cannot be read: {exc}") from None
    if not entries:
        raise ConfigError(f"prompts file {path} holds no prompts")
    return tuple(entries)
