"""``analyze RUN_DIR...``: per-perspective scores, refusal rates and counts, printed and saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from comptrust_core import ConfigError, run_cli, setup_logging

from comptrust_analysis.beyond import render_beyond
from comptrust_analysis.export_dt import export_decodingtrust
from comptrust_analysis.load import load_runs
from comptrust_analysis.report import AnalysisConfig, analyze, render_text

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="analyze",
        description="Per-perspective trust scores for evaluate run directories, printed and saved to the output "
        "folder: scores and seeds tables (.parquet, .csv, .md), plots/ (PNG and SVG), and report.html, one "
        "self-contained page (inline CSS and SVG, no network) that is always written.",
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories written by `evaluate`")
    p.add_argument(
        "--out", type=Path, help="output folder (default: RUN_DIR/analysis for one run, else ./comptrust-analysis)"
    )
    p.add_argument(
        "--variant",
        choices=["dt-main", "dt-compressed-trust"],
        default="dt-compressed-trust",
        help="scorer variant of the tables, plots and report (the other is shown beside it): the compressed-trust "
        "paper's modified DecodingTrust scoring (default: it counts refusals and unparseable answers instead of "
        "dropping them, so refusal-driven variance does not swamp compression effects), or DecodingTrust main",
    )
    p.add_argument(
        "--compare",
        choices=["paper"],
        help="also set our scores beside the Decoding Compressed Trust paper's LLaMA-2-13b-chat numbers "
        "(shipped with the package; matched by method, bits and N:M pattern or sparsity)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the plots (faster; report.html then has none)")
    p.add_argument(
        "--export",
        nargs=2,
        metavar=("FORMAT", "DIR"),
        help="instead of scoring: write the runs' generations to DIR (a new folder) in another tool's layout. FORMAT "
        "decodingtrust: DIR/results/ as DecodingTrust writes its results, one model comptrust/<endpoint> per "
        "endpoint, so DecodingTrust's own scoring scripts run on our generations (see the README)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _export(run_dirs: list[Path], fmt: str, out: Path) -> int:
    if fmt != "decodingtrust":
        raise ConfigError(f"--export {fmt}: unknown format; the one known is decodingtrust")
    result = export_decodingtrust(load_runs(run_dirs), out)
    print(f"wrote {len(result.files)} DecodingTrust result files under {result.out / 'results'}")
    print("models: " + ", ".join(result.models))
    for reason, count in sorted(result.skipped.items()):
        print(f"left out: {count} records ({reason})")
    print(
        "score them with DecodingTrust's scripts from a DecodingTrust checkout whose data/ folder holds the "
        f"benchmark files: cp -r {result.out / 'results'} DecodingTrust/ (see the README, 'Scoring our generations "
        "with DecodingTrust's own code')"
    )
    return 0


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.export:
        return _export(list(args.run_dirs), args.export[0], Path(args.export[1]))
    result = analyze(
        AnalysisConfig(
            run_dirs=tuple(args.run_dirs),
            out=args.out,
            variant=args.variant,
            compare=args.compare,
            plots=not args.no_plots,
        )
    )
    print(render_text(result.scores, result.seeds, result.paper, result.toxicity))
    if result.beyond:
        print(render_beyond(result.beyond))
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="analyze")
