"""The error hierarchy shared by every comptrust package.

Every error a user can cause is a :class:`ComptrustError`: its message names the input and says what to do next.
The CLIs print it as one line and exit non-zero; they never show a traceback for it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ComptrustError",
    "ConfigError",
    "EndpointError",
    "ModelNotFoundError",
    "RunDirError",
    "SchemaVersionError",
    "StorageError",
]


class ComptrustError(Exception):
    """Base class. ``str(err)`` is a complete, one-line message for the user."""

    exit_code: int = 2


class ConfigError(ComptrustError):
    """A flag, plan file or prompts file is invalid."""


class ModelNotFoundError(ComptrustError):
    """A ``--model`` value is not an alias, a local folder, nor a reachable Hugging Face id."""


class CheckpointError(ComptrustError):
    """A checkpoint folder is missing, incomplete, or its manifest is unreadable."""


class EndpointError(ComptrustError):
    """An endpoint is unreachable, speaks another protocol, or lacks its API key."""


class RunDirError(ComptrustError):
    """A run directory holds a different run, or its files are damaged."""


class SchemaVersionError(ComptrustError):
    """A file was written by a newer comptrust than the one reading it."""


class StorageError(ComptrustError):
    """A write failed and no retry will fix it: the disk is full, over quota, read-only or failing, or an object store
    refused a put. The run cannot keep its results, so it stops; what is on disk is whole (see
    :mod:`comptrust_core.storage`). ``path`` and ``errno`` name the write, where known."""

    exit_code = 4
    path: str | None = None
    errno: int | None = None
