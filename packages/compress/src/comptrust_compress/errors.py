"""The error this package adds to core's hierarchy."""

from __future__ import annotations

from comptrust_core import ComptrustError

__all__ = ["VerificationError"]


class VerificationError(ComptrustError):
    """The written checkpoint does not show what the method was asked to do (e.g. far less sparsity than asked).

    Nothing is left at ``--out``. This is a bug or a misbehaving backend, not a bad flag: report it.
    """

    exit_code = 3
