"""``evaluate``: flags → :class:`EvaluateConfig` → :func:`evaluate`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from comptrust_core import ConfigError, read_endpoints, run_cli, setup_logging
from rich.console import Console
from rich.table import Table

from comptrust_evaluate.api import RunSummary, evaluate
from comptrust_evaluate.config import EndpointSpec, EvaluateConfig, RetryPolicy, Timeouts
from comptrust_evaluate.refusal import detector_names
from comptrust_evaluate.scorers import DEFAULT_SCORER, NO_SCORER, scorer_names
from comptrust_evaluate.store import compact_run

__all__ = ["build_config", "main", "parser"]

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate",
        description="Fire trust benchmarks (or your own prompts) at served checkpoints; records go to RUN_DIR, "
        "and rerunning the same command resumes it.",
        epilog="`evaluate compact RUN_DIR` folds a run directory's records into Parquet. Exit codes: 0 done (a few "
        "error records allowed), 1 every request failed, 2 bad input, 3 an endpoint stopped answering (its requests "
        "left for a rerun), 4 a record could not be written (the disk full, over quota, read-only or failing: the "
        "run stopped, its file ends on a whole record; free space and rerun the same command).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--endpoint",
        action="append",
        metavar="URL[,URL...]",
        help="a server's base URL (repeatable); several, comma-separated, are replicas of one checkpoint: one "
        "endpoint (one name, one records file) whose requests are spread over them, each with its own limit and "
        "breaker; a replica given up hands its requests to the others",
    )
    where.add_argument("--endpoints", type=Path, metavar="FILE", help="an endpoints.json written by `serve`")
    p.add_argument("--name", action="append", metavar="NAME", help="name of each --endpoint, in order")
    p.add_argument("--protocol", choices=["tgi", "openai"], help="how to talk to --endpoint URLs (default: detect)")
    p.add_argument("--model", help="model name for OpenAI-style APIs (default: the one the server lists)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (never the key)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--suite",
        help="a packaged suite (quick: our own items; decodingtrust: the full reference configs) or a suite .toml",
    )
    what.add_argument("--prompts", type=Path, metavar="FILE", help="your own prompts, one JSON object per line")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="a DecodingTrust checkout's data/ folder (default for --suite decodingtrust: the Hugging Face dataset "
        "AI-Secure/DecodingTrust, downloaded once into the HF cache)",
    )
    p.add_argument(
        "--task",
        action="append",
        metavar="NAME",
        help="run only this task of the suite (repeatable), e.g. --task toxicity --task fairness",
    )
    p.add_argument(
        "--dt-compat",
        action="store_true",
        help="send DecodingTrust's Llama-2 prompt strings (quirks included) as raw prompts instead of chat messages "
        "through the server's template: numbers comparable with the papers' Llama-2 runs",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run directory (resumed if same)")
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        metavar="N",
        help="requests on the wire per endpoint: the cap of the adaptive limit (default 64); up to 8 times as many "
        "are taken at once, waiting for a slot or a retry",
    )
    p.add_argument(
        "--fixed-concurrency",
        action="store_true",
        help="keep --max-concurrency in flight; do not halve it on overload (429, 503)",
    )
    p.add_argument("--rps", type=float, metavar="R", help="start at most R requests per second per endpoint")
    p.add_argument("--retry-errors", action="store_true", help="redo requests that ended as error records")
    p.add_argument(
        "--compact",
        action="store_true",
        help="fold the records into Parquet at the end (needs comptrust-evaluate[parquet]; also: evaluate compact DIR)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="at most N items per scenario")
    p.add_argument(
        "--task-limit",
        action="append",
        default=[],
        metavar="TASK=N",
        help="at most N items per scenario of TASK, instead of --limit (repeatable), e.g. --task-limit toxicity=20",
    )
    p.add_argument(
        "--sample",
        type=float,
        metavar="FRACTION",
        help="a deterministic random FRACTION of each scenario's items (the same ones for the same --seed)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of --sample (default 0)")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        metavar="N",
        help="tries per request (default 5). 429/503 (overload) cut the limit at most once per episode and the "
        "request waits its Retry-After; other 5xx, resets, malformed bodies and deadlines are retried with jittered "
        "backoff and never cut it; other 4xx are not retried",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="the most one attempt may take, seconds (default 600); also its limit until the endpoint has answered "
        "20 requests of that generation length",
    )
    p.add_argument(
        "--deadline-multiple",
        type=float,
        default=10.0,
        metavar="K",
        help="adaptive deadline of an attempt: max(--deadline-floor, K x the p99 latency of the endpoint's answers "
        "of the same max_new_tokens, 2 x p99 seconds per token of its long answers x max_new_tokens), doubled "
        "each time that request was cut, never above --timeout; a cut attempt is retried (default K = 10)",
    )
    p.add_argument(
        "--deadline-floor", type=float, default=1.0, metavar="S", help="the least an adaptive deadline is (default 1)"
    )
    p.add_argument("--fixed-timeout", action="store_true", help="no adaptive deadline: every attempt gets --timeout")
    p.add_argument(
        "--give-up-after",
        type=float,
        default=60.0,
        metavar="S",
        help="an endpoint that fails 10 attempts in a row (5xx, refused or reset connections, deadlines) is probed "
        "once every 1-10 s; with no answer for S seconds (default 60) it is stopped, its requests left for a rerun "
        "of the same command (exit code 3), while other endpoints go on",
    )
    p.add_argument(
        "--toxicity-scorer",
        default=DEFAULT_SCORER,
        choices=[*scorer_names(), NO_SCORER],
        help="scores toxicity responses: offline (default; alt-profanity-check, no network), perspective (Google "
        "Perspective API, DecodingTrust's scorer, 1 QPS; the API closes at the end of 2026), hf (a local HF "
        "classifier), none",
    )
    p.add_argument(
        "--toxicity-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scorer option (repeatable): perspective key_env=VAR (the variable holding the key, never the key), "
        "qps=1; hf model=ID_OR_FOLDER, label=NAME, device=cpu, batch_size=32",
    )
    p.add_argument(
        "--refusal-detector",
        action="append",
        default=[],
        choices=detector_names(),
        metavar="NAME",
        help="one more refusal detector judging every answer (repeatable), recorded as a `refusal` score of that "
        "variant next to the task's own verdict and the broad rules: classifier (a local HF rejection classifier, "
        "COMPTRUST_REFUSAL_CLASSIFIER / COMPTRUST_REFUSAL_THRESHOLD), or any of " + ", ".join(detector_names()),
    )
    p.add_argument("--progress", choices=["auto", "bar", "log", "off"], default="auto")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _endpoint_specs(args: argparse.Namespace) -> tuple[EndpointSpec, ...]:
    if args.endpoints is not None:
        if args.name:
            raise ConfigError("--name goes with --endpoint; endpoints.json names its endpoints")
        specs = []
        for ep in read_endpoints(args.endpoints):
            spec = EndpointSpec.from_endpoint(ep)
            specs.append(
                EndpointSpec(
                    url=spec.url,
                    name=spec.name,
                    protocol=args.protocol or spec.protocol,
                    model=spec.model or args.model,
                    api_key_env=spec.api_key_env or args.api_key_env,
                    base=spec.base,
                )
            )
        return tuple(specs)
    urls: list[str] = args.endpoint
    names: list[str] = args.name or []
    if names and len(names) != len(urls):
        raise ConfigError(f"got {len(names)} --name for {len(urls)} --endpoint; give one name per endpoint or none")
    return tuple(
        EndpointSpec(
            url=url.split(",")[0],
            name=names[i] if names else None,
            protocol=args.protocol,
            model=args.model,
            api_key_env=args.api_key_env,
            replicas=tuple(u for u in url.split(",")[1:] if u),
        )
        for i, url in enumerate(urls)
    )


def build_config(args: argparse.Namespace) -> EvaluateConfig:
    return EvaluateConfig(
        out=args.out,
        endpoints=_endpoint_specs(args),
        suite=args.suite,
        prompts=args.prompts,
        data_dir=args.data_dir,
        max_concurrency=args.max_concurrency,
        adaptive_concurrency=not args.fixed_concurrency,
        rps=args.rps,
        retry_errors=args.retry_errors,
        compact=args.compact,
        limit=args.limit,
        task_limits=_task_limits(args.task_limit),
        sample=args.sample,
        sample_seed=args.seed,
        tasks=tuple(args.task or ()),
        dt_compat=args.dt_compat,
        retry=RetryPolicy(max_attempts=args.max_attempts, give_up_s=args.give_up_after),
        timeouts=Timeouts(
            total_s=args.timeout,
            read_s=min(args.timeout, Timeouts().read_s),
            adaptive=not args.fixed_timeout,
            deadline_multiple=args.deadline_multiple,
            deadline_floor_s=args.deadline_floor,
        ),
        progress=args.progress,
        toxicity_scorer=args.toxicity_scorer,
        toxicity_options=_toxicity_options(args.toxicity_option),
        refusal_detectors=tuple(dict.fromkeys(args.refusal_detector)),
    )


def _task_limits(raw: list[str]) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in raw:
        task, sep, value = item.partition("=")
        try:
            n = int(value) if sep and task.strip() else 0
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(
                f"--task-limit {item!r} is not TASK=N with N a whole number of at least 1 (e.g. toxicity=20)"
            )
        pairs.append((task.strip(), n))
    return tuple(pairs)


def _toxicity_options(raw: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--toxicity-option {item!r} is not KEY=VALUE (e.g. key_env=PERSPECTIVE_API_KEY)")
        pairs.append((key.strip(), value))
    return tuple(pairs)


def _print_summary(summary: RunSummary) -> None:
    console = Console()
    if not console.is_terminal:  # a log file: plain lines, never a table cut to the width of no terminal
        print(f"{summary.plan} -> {summary.run_dir}")
        for ep in summary.endpoints:
            retries = ", ".join(f"{kind} {n}" for kind, n in ep.retry_kinds) or "0"
            errors = ", ".join(f"{kind} {n}" for kind, n in ep.error_kinds) or "0"
            print(
                f"endpoint {ep.name} ({ep.protocol}, {ep.url}): {ep.resumed + ep.ok + ep.errors}/{ep.total} done, "
                f"{ep.ok} ok, {ep.errors} errors ({errors}), {ep.refusals} refusals, {ep.retries} retries ({retries}), "
                f"{ep.backoffs} back-offs, {ep.rate:.1f} req/s" + (f"; STOPPED: {ep.stopped}" if ep.stopped else "")
            )
        return
    table = Table(title=f"{summary.plan} → {summary.run_dir}")
    columns = ("endpoint", "protocol", "done", "ok", "errors", "refusals", "retries", "back-offs", "req/s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("endpoint", "protocol") else "right")
    for ep in summary.endpoints:
        done = ep.resumed + ep.ok + ep.errors
        counts = (ep.ok, ep.errors, ep.refusals, ep.retries, ep.backoffs)
        table.add_row(ep.name, ep.protocol, f"{done}/{ep.total}", *map(str, counts), f"{ep.rate:.1f}")
    console.print(table)


def compact_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate compact",
        description="Fold a run directory's NDJSON records into one Parquet file per endpoint (not while a run is "
        "appending to it); resuming and `analyze` read both forms.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _compact(argv: list[str]) -> int:
    args = compact_parser().parse_args(argv)
    setup_logging(args.verbose)
    for result in compact_run(args.run_dir):
        Console().print(f"{result.endpoint}: {result.folded} records folded in, {result.total} in Parquet")
    return 0


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compact":
        return _compact(argv[1:])
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    summary = evaluate(build_config(args))
    _print_summary(summary)
    if summary.errors:
        log.warning("%d requests ended as error records; rerun with --retry-errors to redo them", summary.errors)
    for ep in summary.stopped:
        log.error(
            "endpoint %s (%s) stopped: %s; %d of %d requests left: rerun the same command to do them",
            ep.name,
            ep.url,
            ep.stopped,
            ep.left,
            ep.total,
        )
    if summary.stopped:
        return 3
    # failing outright only when nothing succeeded: a few failed requests should not fail a pipeline
    return 1 if summary.errors and not any(ep.ok for ep in summary.endpoints) else 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="evaluate")
