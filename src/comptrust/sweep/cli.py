"""``sweep PLAN.toml``: the whole study from one plan file; ``sweep status PLAN.toml``: where it stands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comptrust_core import run_cli, setup_logging

from comptrust.sweep.plan import load_plan
from comptrust.sweep.state import load_state

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep",
        description="Compress, serve, evaluate and analyze every checkpoint of a plan file. Rerunning resumes.",
        epilog="`sweep status PLAN.toml` shows which stage each checkpoint has reached.",
    )
    p.add_argument("plan", type=Path, help="plan file (TOML), e.g. examples/quickstart.toml")
    p.add_argument("--dry-run", action="store_true", help="print the checkpoints the plan yields and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _status(plan_path: Path) -> int:
    plan = load_plan(plan_path)
    state = load_state(plan.out_dir(), plan_path)
    for cell in plan.cells():
        cs = state.cells.get(cell.name)
        stage = cs.stage if cs else "pending"
        extra = f" ({cs.failed_stage}: {cs.error})" if cs and cs.error else ""
        counts = f" ok={cs.ok} errors={cs.errors}" if cs and cs.stage == "evaluated" else ""
        print(f"{cell.name:<48} {stage}{counts}{extra}")
    return 0


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        if len(argv) != 2:
            print("usage: sweep status PLAN.toml", file=sys.stderr)
            return 2
        return _status(Path(argv[1]))
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    plan = load_plan(args.plan)
    cells = plan.cells()
    if args.dry_run:
        print(f"study {plan.study.name}: {len(cells)} checkpoint(s) into {plan.out_dir()}")
        for cell in cells:
            print(f"  {cell.name}")
        return 0
    from comptrust.sweep.runner import run_sweep

    result = run_sweep(plan, args.plan)
    print(result.report)
    print(f"outputs in {result.out}/ (checkpoints/, runs/, analysis/)")
    if result.failed:
        print(f"sweep: {len(result.failed)} checkpoint(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        print(f"see `sweep status {args.plan}`; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="sweep")
