"""``--model`` → a local Hugging Face folder with safetensors weights, and the manifest's record of where it came from.

Three kinds of input, tried in this order: an alias (:mod:`.aliases`, offline), an existing local folder, a Hugging
Face id (``owner/name``, fetched with ``snapshot_download``: safetensors, config and tokenizer files only).
:func:`check_model_source` classifies and checks an input without doing any work, so a bad ``--model`` fails before
anything is loaded or written.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from comptrust_core import BaseModelRef, ModelNotFoundError

from comptrust_compress._fs import weight_files, weights_hash
from comptrust_compress.models.aliases import ALIASES, alias_names, gguf_path

__all__ = ["ModelKind", "ResolvedModel", "check_model_source", "resolve_model"]

log = logging.getLogger(__name__)

ModelKind = Literal["alias", "hub", "local"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HUB_FILES = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
]
_HUB_CODE_FILES = ["*.py"]


@dataclass(frozen=True)
class ResolvedModel:
    """A base model ready to load: its local folder, its manifest record, and a short name for checkpoint names."""

    path: Path
    ref: BaseModelRef
    short_name: str


def _what_to_do() -> str:
    return f"pass an alias ({', '.join(alias_names())}), a local Hugging Face folder, or a Hugging Face id (owner/name)"


def _check_local_folder(folder: Path, source: str) -> None:
    if not folder.is_dir():
        raise ModelNotFoundError(f"--model {source!r} is a file, not a model folder; {_what_to_do()}")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model folder {source!r} has no config.json; pass a Hugging Face model folder")
    if not weight_files(folder):
        if any(folder.glob("*.bin")):
            raise ModelNotFoundError(
                f"model folder {source!r} has only PyTorch .bin weights; comptrust loads models from safetensors: "
                "re-save it with save_pretrained (safetensors is the default) and pass that folder"
            )
        raise ModelNotFoundError(f"model folder {source!r} has no *.safetensors weight files; pass a complete folder")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1


def check_model_source(source: str) -> ModelKind:
    """Classify ``source`` and check what can be checked offline and for free; raise :class:`ModelNotFoundError`."""
    alias = ALIASES.get(source)
    if alias is not None:
        gguf_path(alias)
        return "alias"
    folder = Path(source).expanduser()
    if folder.exists():
        _check_local_folder(folder, source)
        return "local"
    if _looks_like_path(source):
        raise ModelNotFoundError(f"model folder {source!r} does not exist; {_what_to_do()}")
    if _HUB_ID.match(source):
        return "hub"
    raise ModelNotFoundError(
        f"--model {source!r} is not a known alias, an existing folder, nor a Hugging Face id; {_what_to_do()}"
    )


def resolve_model(source: str, *, trust_remote_code: bool = False) -> ResolvedModel:
    """Make ``source`` a local folder (converting an alias once, downloading a hub id) and describe it."""
    kind = check_model_source(source)
    if kind == "alias":
        from comptrust_compress.models.convert import convert_alias

        converted = convert_alias(ALIASES[source])
        ref = BaseModelRef(
            source=source,
            kind="alias",
            resolved_path=str(converted.folder),
            revision=f"gguf-sha256:{converted.gguf_sha256}",
            content_hash=converted.weights_sha256,
        )
        return ResolvedModel(path=converted.folder, ref=ref, short_name=source)
    if kind == "local":
        folder = Path(source).expanduser().resolve()
        log.info("hashing the weights of %s", folder)
        ref = BaseModelRef(source=source, kind="local", resolved_path=str(folder), content_hash=weights_hash(folder))
        return ResolvedModel(path=folder, ref=ref, short_name=folder.name.lower())
    folder = _download(source, trust_remote_code=trust_remote_code)
    _check_local_folder(folder, source)
    ref = BaseModelRef(
        source=source,
        kind="hub",
        resolved_path=str(folder),
        revision=folder.name,
        content_hash=weights_hash(folder),
    )
    return ResolvedModel(path=folder, ref=ref, short_name=source.rsplit("/", 1)[-1].lower())


def _download(repo_id: str, *, trust_remote_code: bool) -> Path:
    """``snapshot_download`` of the files a checkpoint needs; every failure becomes a one-line error."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    patterns = _HUB_FILES + (_HUB_CODE_FILES if trust_remote_code else [])
    log.info("fetching %s from the Hugging Face hub (safetensors, config and tokenizer files)", repo_id)
    try:
        snapshot = snapshot_download(repo_id, allow_patterns=patterns)
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"Hugging Face id {repo_id!r} is gated; accept its terms on the hub and log in (hf auth login)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"Hugging Face id {repo_id!r} does not exist or is private (log in with hf auth login); {_what_to_do()}"
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise ModelNotFoundError(
            f"Hugging Face id {repo_id!r} is not in the local cache and the hub cannot be reached (offline); "
            f"go online, or pass an alias ({', '.join(alias_names())}) or a local Hugging Face folder"
        ) from exc
    except HFValidationError as exc:
        raise ModelNotFoundError(f"--model {repo_id!r} is not a valid Hugging Face id; {_what_to_do()}") from exc
    except (HfHubHTTPError, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(f"cannot fetch Hugging Face id {repo_id!r}: {first_line}") from exc
    if not isinstance(snapshot, str):  # pragma: no cover - only for dry_run=True
        raise ModelNotFoundError(f"cannot fetch Hugging Face id {repo_id!r}: unexpected answer from the hub client")
    return Path(snapshot)
