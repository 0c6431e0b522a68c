"""Shared fixtures: TGI's schemas, the tiny checkpoint, a loaded model, and the embedded app served on a thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from comptrust_serve.embedded.codec import Codec
from comptrust_serve.testing import build_tiny_checkpoint

# TGI's response schemas, copied from its OpenAPI document (see the file's "_source" note), and a validator for the
# OpenAPI 3 subset they use: type, required, properties, items, enum, nullable, minimum, allOf, oneOf, $ref.
SCHEMAS: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "tgi_schemas.json").read_text())["schemas"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it conforms)."""
    if "$ref" in schema:
        return schema_errors(value, SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]], path)
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null where the schema does not allow it"]
    found: list[str] = []
    for part in schema.get("allOf", []):
        found += schema_errors(value, part, path)
    if "oneOf" in schema:
        matches = sum(not schema_errors(value, option, path) for option in schema["oneOf"])
        if matches != 1:
            found.append(f"{path}: matches {matches} of the oneOf options, not exactly one")
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [*found, f"{path}: {type(value).__name__} where the schema wants {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        found.append(f"{path}: {value} below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{path}: missing required field {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                found += schema_errors(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += schema_errors(item, schema["items"], f"{path}[{i}]")
    return found


def assert_matches(value: Any, name: str) -> None:
    """Fail unless ``value`` conforms to TGI's schema ``name``."""
    problems = schema_errors(value, {"$ref": f"#/components/schemas/{name}"})
    assert not problems, f"response does not match TGI's {name} schema:\n" + "\n".join(problems)


@pytest.fixture
def tgi_schema() -> SchemaCheck:
    """``tgi_schema(value, "GenerateResponse")`` fails unless ``value`` matches that schema of TGI's."""
    return assert_matches


@pytest.fixture(autouse=True)
def _no_installed_engine(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engines on PATH, not a real vLLM that `serve install-engine` put in the cache, in these tests (the
    real one has its own test, tests/test_vllm_engine.py); child processes inherit the variable too."""
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path_factory.getbasetemp() / "no-engine-cache"))
    monkeypatch.delenv("COMPTRUST_VLLM_PYTHON", raising=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def loaded(tiny_checkpoint: Path) -> Any:
    from comptrust_serve.embedded.loader import load_model

    return load_model(tiny_checkpoint)


class ThreadServer:
    """An aiohttp app served on 127.0.0.1 from a background thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> ThreadServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._runner.setup(), self._loop).result()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self._loop).result()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


ServeFactory = Callable[..., tuple[str, Any]]
SchemaCheck = Callable[[Any, str], None]


@pytest.fixture
def serve_tiny(serve_loaded: ServeFactory, loaded: Any) -> ServeFactory:
    """Start engines + apps over the tiny model: ``serve_tiny(max_batch=.., api_key=..) -> (url, engine)``."""

    def start(**options: Any) -> tuple[str, Any]:
        return serve_loaded(loaded, **options)

    return start


@pytest.fixture
def serve_loaded() -> Iterator[ServeFactory]:
    """Start engines + apps over a ``LoadedModel``: ``serve_loaded(loaded, max_batch=..) -> (url, engine)``."""
    from comptrust_serve.embedded.app import ServerSettings, create_app
    from comptrust_serve.embedded.engine import Engine, EngineConfig
    from comptrust_serve.embedded.types import Limits

    started: list[tuple[ThreadServer, Any]] = []

    def start(
        loaded: Any,
        *,
        max_batch: int = 8,
        max_concurrent_requests: int = 64,
        api_key: str | None = None,
        name: str = "tiny",
    ) -> tuple[str, Any]:
        config = EngineConfig(max_batch=max_batch, max_concurrent_requests=max_concurrent_requests)
        codec = Codec(loaded.tokenizer)
        engine = Engine(loaded.model, eos_ids=loaded.eos_ids, pad_id=loaded.pad_id, decode=codec.decode, config=config)
        engine.start()
        settings = ServerSettings(
            name=name,
            limits=Limits(max_input_tokens=255, max_total_tokens=256, max_new_tokens=32),
            max_batch=max_batch,
            max_concurrent_requests=max_concurrent_requests,
            dtype="float32",
            device="cpu",
            version="test",
            api_key=api_key,
        )
        server = ThreadServer(create_app(engine, codec, settings)).start()
        started.append((server, engine))
        return server.url, engine

    yield start
    for server, engine in started:
        engine.stop()
        server.stop()
