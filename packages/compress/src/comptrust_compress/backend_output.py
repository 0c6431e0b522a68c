"""How much of llm-compressor's own console output a run shows.

llm-compressor 0.14.0.1 logs through loguru to stdout (INFO and up, plus a METRIC line with the time and error of
every layer it quantizes: level 38, between WARNING and ERROR) and draws tqdm bars with no ``disable=`` of its own.
Into a file or a pipe (a sweep's log) that is thousands of lines per checkpoint. :func:`quiet_backend_output` turns
it down for the rest of the process when stdout is not a terminal, through the two switches llm-compressor honours:

- ``TQDM_DISABLE=1``: tqdm reads its ``TQDM_*`` variables as parameter defaults when it is first imported (a bar
  whose caller passes its own ``disable=``, such as compressed-tensors' one or two per checkpoint, stays);
- ``LLM_COMPRESSOR_LOG_LEVEL=WARNING``: llm-compressor's logger reads it when llmcompressor is first imported (and
  it wins over any level given in code).

When a llm-compressor method runs (:func:`route_llmcompressor_logs`), a console level of WARNING or above also routes
its records into Python logging (logger ``llmcompressor``: stderr, formatted like every other line of the run, never
the stdout a ``compress`` prints its checkpoint path on), without METRIC lines, each warning once. Errors always
show. A variable the user set is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

    from loguru import Message, Record

__all__ = ["QUIET_ENV", "quiet_backend_output", "route_llmcompressor_logs"]

QUIET_ENV = {"TQDM_DISABLE": "1", "LLM_COMPRESSOR_LOG_LEVEL": "WARNING"}
"""The variables :func:`quiet_backend_output` sets (unless already set)."""

_QUIET_LEVELS = ("WARNING", "ERROR", "CRITICAL")
_log = logging.getLogger("llmcompressor")


def quiet_backend_output(stream: TextIO | None = None, *, verbose: bool = False) -> bool:
    """Quiet llm-compressor's bars and log lines when ``stream`` (stdout) is not a terminal and not ``verbose``;
    whether it did. Call it before llm-compressor (and tqdm) are imported: the CLIs do, first thing."""
    stream = sys.stdout if stream is None else stream
    if verbose or stream.isatty():
        return False
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    return True


def _forward(seen: set[tuple[str, str]]) -> Callable[[Message], None]:
    def sink(message: Message) -> None:
        record = message.record
        level, text = record["level"], record["message"]
        if level.no < logging.ERROR:
            if (level.name, text) in seen:
                return
            seen.add((level.name, text))
        _log.log(level.no, "%s: %s", record["function"], text)

    return sink


def _metric_free(record: Record) -> bool:
    return record["level"].name != "METRIC"


def route_llmcompressor_logs() -> bool:
    """Before llm-compressor runs: with its console level at WARNING or above (as :func:`quiet_backend_output`
    sets it), import it with its console sink on stderr (its import logs a warning on a machine without an
    accelerator), then send its records to Python logging for the rest of the process: no METRIC lines, each warning
    once per call, every error. Otherwise its own configuration stays. Whether it routed them."""
    level = os.environ.get("LLM_COMPRESSOR_LOG_LEVEL", "").upper()
    if level not in _QUIET_LEVELS or os.environ.get("LLM_COMPRESSOR_LOG_DISABLED", "").lower() == "true":
        return False
    with contextlib.redirect_stdout(sys.stderr):  # llmcompressor configures its console sink when first imported
        from llmcompressor.logger import logger

    logger.remove()
    logger.add(_forward(set()), level=level, format="{message}", filter=_metric_free)
    return True
