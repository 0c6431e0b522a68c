"""Checkpoint folders as the servers see them: the files they need, the manifest, and the name they are served as."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from comptrust_core import MANIFEST_FILE, CheckpointError, Manifest, read_manifest

__all__ = ["Checkpoint", "check_checkpoint_files", "open_checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    """A servable model folder: absolute ``path``, the ``name`` it is served as, and its manifest if it has one."""

    path: Path
    name: str
    manifest: Manifest | None = None

    def config(self) -> dict[str, object]:
        """Its ``config.json`` (an empty dict where it cannot be read: the server's own load reports that)."""
        try:
            config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    def stored_dtype(self, config: dict[str, object] | None = None) -> str | None:
        """The dtype its config declares (``torch_dtype``, or ``dtype`` as transformers 5 writes it; a multimodal
        config's ``text_config``), as written; None where it declares none."""
        config = self.config() if config is None else config
        text = config.get("text_config")
        for source in (config, text if isinstance(text, dict) else {}):
            declared = source.get("dtype") or source.get("torch_dtype")
            if declared:
                return str(declared)
        return None


def check_checkpoint_files(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a folder with ``config.json`` and ``*.safetensors`` weights."""
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint folder not found: {path}; pass a folder written by `compress` or a Hugging Face model folder"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json; it is not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        hint = ""
        if any(path.glob("*.bin")):
            hint = " (it holds PyTorch .bin weights only: re-save them with save_pretrained(safe_serialization=True))"
        raise CheckpointError(f"{path} has no *.safetensors weights{hint}; the servers load safetensors only")


def _check_name(name: str) -> str:
    if not name or any(c in name for c in "/\\\n\t") or name.startswith("."):
        raise CheckpointError(f"endpoint name {name!r} must be non-empty, not start with '.', and hold no slashes")
    return name


def open_checkpoint(path: Path, name: str | None = None) -> Checkpoint:
    """Check ``path``'s files, read its ``comptrust.json`` if present, and pick its name.

    The name is ``name`` if given, else the manifest's ``name``, else the folder's name.
    """
    folder = path.expanduser().absolute()
    check_checkpoint_files(folder)
    manifest = read_manifest(folder) if (folder / MANIFEST_FILE).is_file() else None
    chosen = name if name is not None else (manifest.name if manifest is not None else folder.name)
    return Checkpoint(path=folder, name=_check_name(chosen), manifest=manifest)
