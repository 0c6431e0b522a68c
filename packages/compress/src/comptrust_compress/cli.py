"""``compress --model M --method X [level flags] --out DIR``: flags → :class:`CompressConfig` → :func:`compress`."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType
from typing import NoReturn, get_args

from comptrust_core import ConfigError, run_cli, setup_logging

from comptrust_compress.backend_output import quiet_backend_output
from comptrust_compress.config import (
    BITS_CHOICES,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_GROUP_SIZE,
    CompressConfig,
    Device,
    Export,
    Pattern,
)
from comptrust_compress.methods import method_names
from comptrust_compress.models import alias_names

__all__ = ["build_parser", "config_from_args", "main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one-line :class:`ConfigError`s, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="compress",
        description="Compress a model into a checkpoint folder (Hugging Face layout + comptrust.json), "
        "verified by measurement: sparsity per layer, stored bits, perplexity before and after.",
    )
    p.add_argument(
        "--model", required=True, help=f"alias ({', '.join(alias_names())}), local folder, or Hugging Face id"
    )
    p.add_argument("--method", required=True, help=f"compression method: {', '.join(method_names())}")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to create (must not exist)")
    p.add_argument("--name", help="checkpoint name for tables (default: <model>-<method>-<level>)")

    quant = p.add_argument_group("quantization")
    quant.add_argument("--bits", type=int, choices=BITS_CHOICES, help="weight bits")
    quant.add_argument(
        "--group-size",
        type=int,
        metavar="N",
        help=f"quantization group size, -1 for per-channel (default {DEFAULT_GROUP_SIZE})",
    )
    quant.add_argument(
        "--act-order", action=argparse.BooleanOptionalAction, default=None, help="GPTQ activation ordering"
    )
    quant.add_argument("--export", choices=get_args(Export), help="compressed-tensors, or dense fake-quant weights")

    prune = p.add_argument_group("pruning")
    prune.add_argument("--sparsity", type=float, metavar="F", help="fraction of weights to zero, 0 < F < 1")
    prune.add_argument("--pattern", choices=get_args(Pattern), help="N:M pattern (implies its sparsity)")

    calib = p.add_argument_group("calibration")
    calib.add_argument("--calib-data", metavar="SOURCE", help="calibration data source")
    calib.add_argument("--calib-samples", type=int, metavar="N", help=f"samples (default {DEFAULT_CALIB_SAMPLES})")
    calib.add_argument("--calib-seqlen", type=int, metavar="N", help="tokens per sample")
    calib.add_argument("--calib-seed", type=int, metavar="N", help="sampling seed")

    run = p.add_argument_group("run")
    run.add_argument("--device", choices=get_args(Device), help="work device (default: cuda if visible, else cpu)")
    run.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code to run")
    run.add_argument("--ppl-tokens", type=int, metavar="N", help="held-out tokens for perplexity (default: all)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> CompressConfig:
    return CompressConfig(
        model=args.model,
        method=args.method,
        out=args.out,
        name=args.name,
        bits=args.bits,
        group_size=args.group_size,
        act_order=args.act_order,
        sparsity=args.sparsity,
        pattern=args.pattern,
        calib_data=args.calib_data,
        calib_samples=args.calib_samples,
        calib_seqlen=args.calib_seqlen,
        calib_seed=args.calib_seed,
        export=args.export,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        ppl_tokens=args.ppl_tokens,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the temporary checkpoint folder is cleaned up.
    raise KeyboardInterrupt


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    setup_logging(args.verbose)
    quiet_backend_output(verbose=args.verbose)
    from comptrust_compress.pipeline import compress

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        out = compress(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="compress")
