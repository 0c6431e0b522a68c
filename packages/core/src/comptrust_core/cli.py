"""What every comptrust command does at its edge: one-line errors, logging setup."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from comptrust_core.errors import ComptrustError

__all__ = ["run_cli", "setup_logging"]


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG if verbose else getattr(logging, os.environ.get("COMPTRUST_LOG", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None, prog: str = "comptrust") -> int:
    """Run a command's main; turn a :class:`ComptrustError` into ``prog: error: ...`` on stderr and its exit code,
    and a write the disk refused (ENOSPC, EDQUOT, EIO, EROFS) anywhere below into the same line and exit code 4
    (:class:`~comptrust_core.StorageError`).

    A command set up for its own process (logging, environment variables that quiet a backend) may also be called
    in-process (a notebook, a test, another command): what it changed of the environment and of the root logger is
    put back when it returns, so the caller's process is left as it was."""
    environ = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(argv)
    except ComptrustError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # a write the disk or the filesystem refused, wherever it happened (an OSError, or a library's own exception
        # naming one): one line and exit 4, never a traceback
        from comptrust_core.storage import as_os_error, is_storage_error, storage_error

        if not is_storage_error(exc):
            raise
        cause = as_os_error(exc)
        error = storage_error(Path(cause.filename or os.getcwd()), cause, "its output")
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        if dict(os.environ) != environ:
            os.environ.clear()
            os.environ.update(environ)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
