"""Endpoints: what ``serve`` writes to ``endpoints.json`` and ``evaluate`` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from comptrust_core._io import atomic_write_text, check_schema_version
from comptrust_core.errors import ConfigError
from comptrust_core.manifest import Manifest

__all__ = ["ENDPOINT_SCHEMA_VERSION", "Endpoint", "Protocol", "read_endpoints", "write_endpoints"]

ENDPOINT_SCHEMA_VERSION = 1

Protocol = Literal["tgi", "openai"]


class Endpoint(BaseModel):
    """One inference server. Never holds an API key: only the NAME of the environment variable that does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = ENDPOINT_SCHEMA_VERSION
    name: str = Field(description="stable identity, part of every record key; defaults to the checkpoint's name")
    url: str = Field(description="base URL, e.g. http://127.0.0.1:8080")
    protocol: Protocol = "tgi"
    model: str | None = Field(default=None, description="model name sent to OpenAI-style APIs")
    api_key_env: str | None = Field(default=None, description="environment variable holding the API key")
    checkpoint: str | None = Field(default=None, description="checkpoint folder served, if known")
    manifest: Manifest | None = None
    launcher: str | None = None
    handle: str | None = Field(default=None, description="container id or pid, for teardown")
    engine: str | None = Field(
        default=None, description="the inference engine serving it: embedded, tgi, vllm (None: not known, e.g. hosted)"
    )
    dtype: str | None = Field(
        default=None, description="the dtype it was asked to serve in (None: the engine's default)"
    )

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"endpoint URL {v!r} must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\\n\t") or v.startswith("."):
            raise ValueError(f"endpoint name {v!r} must be non-empty, not start with '.', and hold no slashes")
        return v


_LIST = TypeAdapter(list[Endpoint])


def write_endpoints(path: Path, endpoints: list[Endpoint]) -> None:
    atomic_write_text(path, json.dumps([e.model_dump(mode="json") for e in endpoints], indent=2) + "\n")


def read_endpoints(path: Path) -> list[Endpoint]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"endpoints file not found: {path}; `serve` writes one, or pass --endpoint URL") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"endpoints file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ConfigError(f"endpoints file {path} must hold a JSON list of endpoints")
    for entry in data:
        if isinstance(entry, dict):
            check_schema_version(
                entry.get("schema_version", ENDPOINT_SCHEMA_VERSION), ENDPOINT_SCHEMA_VERSION, "endpoints file", path
            )
    try:
        return _LIST.validate_python(data)
    except ValueError as exc:
        raise ConfigError(f"endpoints file {path} is invalid: {exc}") from exc
