"""``analyze RUN_DIR...``: per-perspective scores, refusal rates and counts, printed and saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from comptrust_core import run_cli, setup_logging

from comptrust_analysis.report import AnalysisConfig, analyze, render_text

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="analyze",
        description="Per-perspective trust scores for evaluate run directories (printed; saved as Parquet + Markdown).",
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories written by `evaluate`")
    p.add_argument(
        "--out", type=Path, help="output folder (default: RUN_DIR/analysis for one run, else ./comptrust-analysis)"
    )
    p.add_argument(
        "--variant",
        choices=["dt-main", "dt-compressed-trust"],
        default="dt-main",
        help="scorer variant: DecodingTrust main, or the compressed-trust paper's modified scoring",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    result = analyze(AnalysisConfig(run_dirs=tuple(args.run_dirs), out=args.out, variant=args.variant))
    print(render_text(result.scores))
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="analyze")
