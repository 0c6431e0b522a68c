"""Convert a GGUF alias once into a cached Hugging Face safetensors folder.

transformers de-quantizes a GGUF file into a float32 model whose config still says ``quant_method: gguf``; such a
model does not save as it is, and llm-compressor refuses its config. So a fresh model is built from the config
without ``quantization_config``, the weights are copied in, and that is saved (bfloat16). The folder is written
under a temporary name and renamed in, so a crash never leaves a half-written folder; two processes that ask at once
take turns on a lock file (``<cache>/locks/``): the second waits, then uses the first one's folder instead of
converting again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from comptrust_core import ModelNotFoundError, cache_dir

from comptrust_compress._fs import publish_dir, sha256_file, staging_dir, weight_files, weights_hash
from comptrust_compress.models.aliases import GgufAlias, gguf_path

__all__ = ["SOURCE_FILE", "ConvertedAlias", "convert_alias"]

log = logging.getLogger(__name__)

SOURCE_FILE = "comptrust-source.json"
"""Written into each converted folder: where it came from, and the content hash of its weights."""

_SHORT_HASH = 12
# Keys of a GGUF-derived config that describe the GGUF file rather than the model.
_DROP_CONFIG_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path")
# Loader bookkeeping that transformers writes into tokenizer_config.json of a GGUF-loaded tokenizer.
_DROP_TOKENIZER_KEYS = ("is_local", "local_files_only", "gguf_file")


@dataclass(frozen=True)
class ConvertedAlias:
    """A converted alias folder and the facts recorded beside it."""

    folder: Path
    gguf_sha256: str
    weights_sha256: str
    """``sha256:<hex>`` over the folder's weight files (see :func:`comptrust_compress._fs.weights_hash`)."""


def _cache_folder(alias: GgufAlias, gguf_sha256: str) -> Path:
    return cache_dir() / "models" / f"{alias.name}-{gguf_sha256[:_SHORT_HASH]}"


def _read_source(folder: Path) -> ConvertedAlias | None:
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (folder / "config.json").is_file() or not weight_files(folder):
        return None
    return ConvertedAlias(folder, str(source["gguf_sha256"]), str(source["weights_sha256"]))


@contextlib.contextmanager
def _converting(final: Path) -> Iterator[None]:
    """Hold the lock on ``final``'s conversion (an advisory ``flock`` on a file in the cache)."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{final.name}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is converting %s; waiting for it", final.name)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def convert_alias(alias: GgufAlias) -> ConvertedAlias:
    """The cached Hugging Face folder of ``alias``, converting the GGUF file on first use."""
    gguf = gguf_path(alias)
    gguf_sha256 = sha256_file(gguf)
    final = _cache_folder(alias, gguf_sha256)
    if final.exists():
        return _cached(alias, final)
    with _converting(final):
        if final.exists():  # converted by the process that held the lock
            return _cached(alias, final)
        return _convert_once(alias, gguf, gguf_sha256, final)


def _cached(alias: GgufAlias, final: Path) -> ConvertedAlias:
    cached = _read_source(final)
    if cached is None:
        raise ModelNotFoundError(
            f"the cached conversion of {alias.name!r} at {final} is incomplete or damaged; delete that folder "
            "and run again to convert it afresh"
        )
    log.debug("using cached conversion %s", final)
    return cached


def _convert_once(alias: GgufAlias, gguf: Path, gguf_sha256: str, final: Path) -> ConvertedAlias:
    started = time.perf_counter()
    log.info("converting %s (%s) to a Hugging Face folder, once: %s", alias.name, gguf.name, final)
    with staging_dir(final) as tmp:
        _convert(alias, gguf, gguf_sha256, tmp)
        if not publish_dir(tmp, final, keep_existing=True):
            log.info("another process converted %s first; using its folder", alias.name)
    converted = _read_source(final)
    if converted is None:  # pragma: no cover - only if the folder is removed under our feet
        raise ModelNotFoundError(f"the conversion of {alias.name!r} at {final} vanished; run again")
    log.info("converted %s in %.1f s", alias.name, time.perf_counter() - started)
    return converted


def _convert(alias: GgufAlias, gguf: Path, gguf_sha256: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from comptrust_compress.hf import save_hf_folder

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _set_special_tokens(tokenizer, gguf)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = {k: v for k, v in loaded.config.to_dict().items() if k not in _DROP_CONFIG_KEYS}
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.eval()
    save_hf_folder(model, tokenizer, out, torch.bfloat16)
    _tidy_tokenizer_config(out / "tokenizer_config.json", config_dict.get("max_position_embeddings"))
    source = {
        "alias": alias.name,
        "package": alias.distribution,
        "package_version": _version_or_none(alias.distribution),
        "gguf_file": alias.gguf_file,
        "gguf_sha256": gguf_sha256,
        "weights_sha256": weights_hash(out),
        "transformers_version": _version_or_none("transformers"),
        "note": "converted by comptrust-compress: GGUF de-quantized by transformers, stored as bfloat16 safetensors",
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


_SPECIAL_TOKEN_KEYS = {"bos": "bos_token", "eos": "eos_token", "unknown": "unk_token", "padding": "pad_token"}


def _set_special_tokens(tokenizer: Any, gguf: Path) -> None:
    """Name the special tokens by the ids the GGUF's own metadata gives (``tokenizer.ggml.<kind>_token_id``).

    Some transformers releases (5.17 among them) guess them wrong when building a tokenizer from a GGUF (SmolLM2's
    eos came out as ``<|im_start|>``), which breaks generation's stop condition and the chat template's turns.
    """
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    for kind, attribute in _SPECIAL_TOKEN_KEYS.items():
        field = fields.get(f"tokenizer.ggml.{kind}_token_id")
        if field is None or not field.data:
            continue
        token_id = int(field.parts[field.data[0]][0])
        setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(token_id))


def _tidy_tokenizer_config(path: Path, max_length: object) -> None:
    """Drop loader bookkeeping, name a class every transformers version knows, and set a real max length."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in _DROP_TOKENIZER_KEYS:
        data.pop(key, None)
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(max_length, int):
        data["model_max_length"] = max_length
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _version_or_none(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
