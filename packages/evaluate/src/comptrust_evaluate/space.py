"""Will the records fit? Before a run, the bytes it will write (its requests left times the bytes a record takes:
measured from the records already on disk, else estimated from its first request), against the free space of the run
directory's filesystem; during it, the same with the bytes per record measured as they are written. Each check warns
once, in one line, when the space will run out before the end; the run goes on (a full disk then stops it cleanly,
see :class:`~comptrust_evaluate.store.RecordWriter`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comptrust_core.storage import filesystem_of, human_bytes

from comptrust_evaluate.plan import Unit
from comptrust_evaluate.store import RecordWriter

__all__ = ["RECORD_OVERHEAD_BYTES", "SpaceWatch", "estimate_record_bytes"]

log = logging.getLogger(__name__)

RECORD_OVERHEAD_BYTES = 900
"""What a record holds besides its request and its answer's text (key, endpoint, timings, verdicts, scores),
about: measured on the quick suite's records."""

BYTES_PER_TOKEN = 4
"""Bytes of answer text per generated token, about (English text, JSON-escaped)."""


def estimate_record_bytes(unit: Unit) -> int:
    """A record's size, before any is written: its request as JSON, its longest answer, the rest."""
    request = len(unit.request.model_dump_json())
    return request + unit.request.params.max_new_tokens * BYTES_PER_TOKEN + RECORD_OVERHEAD_BYTES


@dataclass
class SpaceWatch:
    """Warns (once before the run, once while it runs) when the run directory's filesystem will not hold the
    records still to write."""

    run_dir: Path
    writers: Sequence[RecordWriter]
    left: int
    """Requests still to send, over every endpoint."""
    warned: set[str] = field(default_factory=set)

    def check_before(self, first: Unit | None) -> None:
        """At start: bytes per record from the files on disk where they hold records, else from ``first``."""
        sizes = [(w.existing_bytes, w.existing_records) for w in self.writers if w.existing_records]
        if sizes:
            per = sum(b for b, _ in sizes) / sum(n for _, n in sizes)
            how = "measured from the records already on disk"
        elif first is not None:
            per, how = estimate_record_bytes(first), "estimated from its first request and its longest answer"
        else:
            return
        self._check("start", per, self.left, how)

    def check_now(self) -> None:
        """While running: bytes per record measured on what this run wrote."""
        written = sum(w.written for w in self.writers)
        if written < 100:
            return
        per = sum(w.written_bytes for w in self.writers) / written
        self._check("run", per, max(0, self.left - written), "measured on the records written so far")

    def _check(self, when: str, per_record: float, left: int, how: str) -> None:
        if when in self.warned or left <= 0:
            return
        found = filesystem_of(self.run_dir)
        needed = per_record * left
        if found is None or found.free >= needed:
            return
        self.warned.add(when)
        log.warning(
            "%d requests left need about %s of records in %s (%s per record, %s), but %s: the run will stop when "
            "it is full; free space there or give another --out",
            left,
            human_bytes(needed),
            self.run_dir,
            human_bytes(per_record),
            how,
            found.describe(),
        )

    async def watch(self, every_s: float = 1.0) -> None:
        """:meth:`check_now` every ``every_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            self.check_now()
