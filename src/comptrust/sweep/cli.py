"""``sweep PLAN.toml``: the whole study from one plan file; ``sweep status PLAN.toml``: where it stands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from comptrust_analysis.report import gate_summary
from comptrust_compress import quiet_backend_output
from comptrust_core import StorageError, run_cli, setup_logging

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
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the checkpoints, the requests per checkpoint and a time estimate, and exit",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default=None,
        help="where the cells run: this machine (the default), or Ray tasks on a cluster (overrides [study] executor)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="the Ray cluster to use (auto, HOST:PORT or ray://HOST:10001; overrides [ray] address); none: a local Ray",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _status(plan_path: Path) -> int:
    plan = load_plan(plan_path)
    state = load_state(plan.out_dir(), plan_path)
    cells = plan.cells()
    width = max(len(c.name) for c in cells)
    for cell in cells:
        cs = state.cells.get(cell.name)
        stage = cs.stage if cs else "pending"
        extra = f" ({cs.failed_stage}: {cs.error})" if cs and cs.error else ""
        counts = f" ok={cs.ok} errors={cs.errors}" if cs and cs.stage == "evaluated" else ""
        gpus = f" gpus={','.join(map(str, cs.gpus))}" if cs and cs.gpus else ""
        gpus += f" node={cs.node}" if cs and cs.node else ""
        gpus += f" log={cs.log}" if cs and cs.log and cs.stage == "failed" else ""
        times = ""
        if cs and cs.compress_s is not None:
            times += f" compress={cs.compress_s:.0f}s"
        if cs and cs.evaluate_s is not None and cs.requests:
            times += f" evaluate={cs.requests}req/{cs.evaluate_s:.0f}s"
        print(f"{cell.name:<{width}}  {stage}{extra}{counts}{gpus}{times}")
    done = sum(1 for c in cells if c.name in state.cells and state.cells[c.name].stage == "evaluated")
    failed = sum(1 for c in cells if c.name in state.cells and state.cells[c.name].stage == "failed")
    print(f"{done}/{len(cells)} evaluated, {failed} failed; outputs in {plan.out_dir()}")
    return 0


def _dry_run(plan_path: Path, executor: str | None, address: str | None) -> int:
    from comptrust_compress import method_names

    from comptrust.sweep.estimate import estimate, format_estimate

    plan = load_plan(plan_path)
    state = load_state(plan.out_dir(), plan_path)
    if (executor or plan.study.executor) == "ray":
        from comptrust.sweep.ray_executor import cluster_shape, connect, format_placement

        connect(address or plan.ray.address)
        shape = cluster_shape()
        est = estimate(plan, state, method_names(), cluster=shape)
        print(format_estimate(plan, est))
        print(format_placement(plan, shape, est))
        return 0
    print(format_estimate(plan, estimate(plan, state, method_names())))
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
    if args.dry_run:
        return _dry_run(args.plan, args.executor, args.address)
    plan = load_plan(args.plan)
    quiet_backend_output(verbose=args.verbose)  # llm-compressor's bars and per-layer lines, into a log file
    from comptrust.sweep.runner import run_sweep

    result = run_sweep(plan, args.plan, executor=args.executor, address=args.address)
    if result.halted:
        left = sum(1 for cs in result.state.cells.values() if cs.stage not in ("evaluated", "failed"))
        raise StorageError(
            f"the study stopped: {result.halted}; {left} checkpoint(s) not done, no analysis written; "
            f"see `sweep status {args.plan}`, free space under {result.out}, then rerun the same command: it resumes"
        )
    print(result.report)
    print(f"outputs in {result.out}/ (checkpoints/, runs/, analysis/)")
    gate_failed = _gate_line(result.gate)
    if result.failed:
        print(f"sweep: {len(result.failed)} checkpoint(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        print(f"see `sweep status {args.plan}`; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 1 if gate_failed else 0


def _gate_line(gate: dict[str, object] | None) -> bool:
    """Print the ``[gate]`` verdict; whether it failed."""
    if gate is None:
        return False
    line, failed = gate_summary(gate)
    print(line, file=sys.stderr if failed else sys.stdout)
    return failed


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="sweep")
