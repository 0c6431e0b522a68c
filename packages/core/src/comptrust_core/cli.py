"""What every comptrust command does at its edge: one-line errors, logging setup."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from comptrust_core.errors import ComptrustError

__all__ = ["run_cli", "setup_logging"]


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG if verbose else getattr(logging, os.environ.get("COMPTRUST_LOG", "INFO").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None, prog: str = "comptrust") -> int:
    """Run a command's main; turn a :class:`ComptrustError` into ``prog: error: ...`` on stderr and its exit code."""
    try:
        return main(argv)
    except ComptrustError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
