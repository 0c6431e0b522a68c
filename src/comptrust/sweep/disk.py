"""What a sweep will write: its checkpoints still to make and the records of its cells still to evaluate, against
the free space of its output folder's filesystem. The dry run prints it; a sweep warns at start (one line) when it
will not fit. Measured where the sweep has measured it (the checkpoints it made, per method; the bytes per record of
its runs), estimated otherwise (the base model's weights at 2 bytes each; a record from the plan's first request)."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from comptrust_compress.space import parameter_count
from comptrust_core import MANIFEST_FILE, RECORDS_DIR, cache_dir, read_manifest
from comptrust_core.storage import filesystem_of, human_bytes
from comptrust_evaluate import EndpointSpec, make_plan
from comptrust_evaluate.space import estimate_record_bytes

from comptrust.sweep.plan import Cell, Plan
from comptrust.sweep.stages import evaluate_config
from comptrust.sweep.state import SweepState

__all__ = ["DiskEstimate", "disk_estimate", "warn_if_short"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskEstimate:
    checkpoints: int | None
    """Bytes of the checkpoints still to make (None: not known before the first one is made)."""
    records: int
    """Bytes of the records still to write."""
    how: str
    free: int | None
    filesystem: str

    @property
    def total(self) -> int:
        return (self.checkpoints or 0) + self.records

    def line(self) -> str:
        parts = [f"records {human_bytes(self.records)}"]
        parts.insert(
            0, f"checkpoints {human_bytes(self.checkpoints)}" if self.checkpoints is not None else "checkpoints unknown"
        )
        free = f"; {self.filesystem}" if self.free is not None else ""
        return f"disk: about {human_bytes(self.total)} still to write ({', '.join(parts)}; {self.how}){free}"

    @property
    def short(self) -> bool:
        return self.free is not None and self.free < self.total


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _base_weights_bytes(cell: Cell) -> int | None:
    """The base model's weights at 2 bytes each, where it is on this machine (a folder, a converted alias)."""
    source = Path(cell.model.source).expanduser()
    folders = [source] if source.is_dir() else sorted(cache_dir().glob(f"models/{cell.model.source}-*"))
    for folder in folders:
        count = parameter_count(folder)
        if count:
            return count * 2
    return None


def _checkpoint_bytes(out: Path, cells: list[Cell]) -> tuple[int | None, str]:
    made: dict[str, list[int]] = {}
    for manifest_file in sorted((out / "checkpoints").glob(f"*/{MANIFEST_FILE}")):
        try:
            made.setdefault(read_manifest(manifest_file.parent).method.name, []).append(
                _folder_bytes(manifest_file.parent)
            )
        except Exception:  # a damaged manifest is the sweep's to report, not the estimate's
            continue
    total, measured = 0, 0
    for cell in cells:
        sizes = made.get(cell.method)
        if sizes:
            total, measured = total + int(statistics.fmean(sizes)), measured + 1
            continue
        base = _base_weights_bytes(cell)
        if base is None:
            return None, "checkpoint sizes unknown until one is made"
        total += base
    return total, f"{measured} checkpoint size(s) measured, {len(cells) - measured} from the base model's weights"


def _record_bytes(plan: Plan, out: Path, state: SweepState) -> tuple[float, str]:
    size = count = 0
    for name, cs in state.cells.items():
        files = list((out / "runs" / name / RECORDS_DIR).glob("*.ndjson"))
        done = (cs.ok or 0) + (cs.errors or 0)
        if files and done:
            size, count = size + sum(f.stat().st_size for f in files), count + done
    if count:
        return size / count, "bytes per record measured on this sweep's runs"

    config = evaluate_config(plan, Path("unused"), EndpointSpec(url="http://127.0.0.1:1", name="dry-run"))
    evaluate_plan = make_plan(config)
    first = next(evaluate_plan.iter_items(), None)
    if first is None:
        return 0.0, "no requests"
    return float(
        estimate_record_bytes(evaluate_plan.unit(first[0], first[1], 0))
    ), "a record estimated from the first request"


def disk_estimate(
    plan: Plan, state: SweepState, to_compress: list[Cell], to_evaluate: int, requests_per_cell: int
) -> DiskEstimate:
    """What is still to write under the plan's output folder, and the space there."""
    out = plan.out_dir()
    checkpoints, how_ckpt = _checkpoint_bytes(out, to_compress) if to_compress else (0, "no checkpoint to make")
    per_record, how_records = _record_bytes(plan, out, state)
    found = filesystem_of(out)
    return DiskEstimate(
        checkpoints=checkpoints,
        records=int(per_record * requests_per_cell * to_evaluate),
        how=f"{how_ckpt}, {how_records}",
        free=found.free if found is not None else None,
        filesystem=found.describe() if found is not None else "",
    )


def warn_if_short(estimate: DiskEstimate, out: Path) -> None:
    """One warning line when the sweep's output folder will not hold what it still has to write."""
    if estimate.short:
        log.warning(
            "this sweep still has to write about %s under %s, but %s: it will stop when the disk is full; free "
            "space there or move [study] out",
            human_bytes(estimate.total),
            out,
            estimate.filesystem,
        )
