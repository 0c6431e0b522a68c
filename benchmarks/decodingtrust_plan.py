"""The full ``decodingtrust`` plan at the reference's sizes: how many requests, how long to count and enumerate them,
and the peak memory, over a synthetic data/ folder (placeholder items in DecodingTrust's formats and row counts).

    uv run python benchmarks/decodingtrust_plan.py [--keep DIR] [--dt-compat]

Counts with ``Plan.total`` (items only), then enumerates every unit with its record key, as an endpoint's pending
requests are enumerated. AdvGLUE++'s per-task counts are not known here (1,000 per task is a placeholder); the Enron
context-* prompts use a word-level stand-in for GPT-2's tokenizer (no download). Numbers are for the machine it runs
on, never a test assertion.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from comptrust_core import record_key
from comptrust_core.cpu_dtype import cpu_summary
from comptrust_evaluate import build_plan, load_suite
from comptrust_evaluate.synthetic_data import ROW_COUNTS, WordTokenizer, write_synthetic_decodingtrust
from comptrust_evaluate.tasks import _enron_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write the synthetic data here (kept) instead of a temporary folder")
    parser.add_argument("--dt-compat", action="store_true")
    args = parser.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    _enron_context.gpt2_tokenizer = WordTokenizer  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "data"
        start = time.perf_counter()
        files = write_synthetic_decodingtrust(root, ROW_COUNTS)
        print(f"wrote {len(files)} synthetic files in {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        plan = build_plan(load_suite("decodingtrust", data_dir=root), dt_compat=args.dt_compat)
        total = plan.total
        print(f"total {total:,} requests, counted in {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        per_task: Counter[str] = Counter()
        for unit in plan.units:
            record_key("endpoint", unit.task.name, unit.item.item_id, unit.sample_index, unit.request)
            per_task[unit.task.name] += 1
        elapsed = time.perf_counter() - start
        print(f"enumerated with record keys in {elapsed:.1f}s ({total / elapsed:,.0f} units/s)")
        for task, count in sorted(per_task.items()):
            print(f"  {task:18s} {count:>9,}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
