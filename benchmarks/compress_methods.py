"""Every compression method on SmolLM2-135M-Instruct on the CPU, side by side in one run: time and perplexity.

    uv run python benchmarks/compress_methods.py [--calib-samples 32] [--calib-seqlen 256] [--group-size 64]
        [--bits 8 4 3] [--only gptq,awq] [--ppl-tokens N] [--keep DIR]

Runs ``compress`` (the library call, so every checkpoint is written, reloaded and measured like any other) for:
dense; round-to-nearest (``rtn``), GPTQ and AWQ at each ``--bits`` with the same group size; magnitude, SparseGPT
and Wanda at 2:4. The calibration-based methods all get the same draw from the project's shipped text (seed 0).
Prints one row per checkpoint: seconds (wall, including load and verification), held-out perplexity after, and the
ratio to dense. Timings are for the machine it runs on, never a test assertion.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from comptrust_compress import CompressConfig, compress
from comptrust_core import read_manifest
from comptrust_core.cpu_dtype import cpu_summary

MODEL = "smollm2-135m-instruct"


def _runs(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    calib = {"calib_samples": args.calib_samples, "calib_seqlen": args.calib_seqlen, "calib_seed": 0}
    runs: list[tuple[str, str, dict[str, Any]]] = [("dense", "-", {})]
    for bits in sorted(args.bits, reverse=True):
        level = {"bits": bits, "group_size": args.group_size}
        runs.append(("rtn", f"w{bits} g{args.group_size}", level))
        runs.append(("gptq", f"w{bits} g{args.group_size}", {**level, **calib}))
        runs.append(("awq", f"w{bits} g{args.group_size}", {**level, **calib}))
    runs.append(("magnitude", "2:4", {"pattern": "2:4"}))
    runs.append(("sparsegpt", "2:4", {"pattern": "2:4", **calib}))
    runs.append(("wanda", "2:4", {"pattern": "2:4", **calib}))
    if args.only:
        wanted = set(args.only.split(","))
        runs = [run for run in runs if run[0] in wanted or run[0] == "dense"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-seqlen", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3])
    parser.add_argument("--only", help="comma-separated methods (dense always runs)")
    parser.add_argument("--ppl-tokens", type=int, default=None, help="held-out tokens (default: all)")
    parser.add_argument("--keep", type=Path, help="write the checkpoints here instead of a temporary folder")
    args = parser.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="compress-bench-") as scratch:
        root = args.keep or Path(scratch)
        rows = []
        for index, (method, level, options) in enumerate(_runs(args)):
            out = root / f"{index:02d}-{method}-{level.replace(' ', '').replace(':', 'of')}"
            started = time.perf_counter()
            compress(
                CompressConfig(model=MODEL, method=method, out=out, device="cpu", ppl_tokens=args.ppl_tokens, **options)
            )
            seconds = time.perf_counter() - started
            measured = read_manifest(out).measured
            rows.append((method, level, seconds, measured.perplexity_after or float("nan"), measured.effective_bits))
            print(f"done {method} {level}: {seconds:.1f} s, perplexity {rows[-1][3]:.2f}", flush=True)

    dense = rows[0][3]
    print(
        f"\nSmolLM2-135M-Instruct on the CPU; calibration {args.calib_samples} x {args.calib_seqlen} tokens of the "
        "shipped text, seed 0; perplexity on the shipped held-out text"
    )
    print(f"{'method':<10} {'level':<10} {'seconds':>8} {'perplexity':>11} {'x dense':>8} {'bits/w':>7}")
    for method, level, seconds, ppl, bits in rows:
        print(f"{method:<10} {level:<10} {seconds:>8.1f} {ppl:>11.2f} {ppl / dense:>8.2f} {bits:>7.2f}")


if __name__ == "__main__":
    main()
