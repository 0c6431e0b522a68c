"""``analyze RUN_DIR...``: per-perspective scores, refusal rates and counts, printed and saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from comptrust_core import ConfigError, run_cli, setup_logging

from comptrust_analysis.beyond import render_beyond
from comptrust_analysis.export_dt import export_decodingtrust
from comptrust_analysis.load import load_runs
from comptrust_analysis.report import AnalysisConfig, Gate, analyze, gate_summary, render_text

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
        "--correction",
        choices=["holm", "bh", "none"],
        default="holm",
        help="multiple-comparison correction over the study's pooled deltas against the dense base: holm (default, "
        "family-wise error), bh (Benjamini-Hochberg, false discovery rate) or none",
    )
    p.add_argument(
        "--equivalence",
        type=float,
        metavar="POINTS",
        help="call a delta 'equivalent within ±POINTS' when two one-sided tests (TOST, 0.05 each) put it inside "
        "that margin (its 90%% interval lies within ±POINTS); without it, a non-significant delta is 'no change "
        "detected', never 'no change'",
    )
    p.add_argument(
        "--gate",
        metavar="max-drop=POINTS",
        help="regression gate for pipelines: exit 1 when any configuration's pooled delta on a perspective is below "
        "-POINTS with its whole 95%% interval below -POINTS (a drop larger than allowed that noise cannot explain), "
        "else 0; the verdict, naming each failing cell, goes to OUT/gate.json",
    )
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
    if args.equivalence is not None and not args.equivalence > 0:
        raise ConfigError(f"--equivalence {args.equivalence:g}: the margin must be a positive number of score points")
    gate = Gate.parse(args.gate) if args.gate else None
    result = analyze(
        AnalysisConfig(
            run_dirs=tuple(args.run_dirs),
            out=args.out,
            variant=args.variant,
            compare=args.compare,
            plots=not args.no_plots,
            correction=args.correction,
            equivalence=args.equivalence,
            gate=gate,
        )
    )
    print(
        render_text(
            result.scores, result.seeds, result.paper, result.toxicity, deltas=result.deltas, correction=args.correction
        )
    )
    if result.beyond:
        print(render_beyond(result.beyond))
    print("wrote " + ", ".join(str(f) for f in result.files))
    if result.gate is not None:
        line, failed = gate_summary(result.gate)
        print(line)
        return 1 if failed else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="analyze")
