"""Output tokens/s of the embedded server (dynamic batching) against one-request-at-a-time transformers ``generate``,
on the same model and machine, at 1, 8 and 32 concurrent clients, in float32 and bfloat16 side by side in one run,
with the CPU's model and torch's capability (bfloat16 is fast only on a CPU with bfloat16 hardware).

    uv run python benchmarks/serve_embedded_throughput.py [--model smollm2-135m-instruct] [--device cpu|cuda]
                                                          [--concurrency 1 8 32] [--new-tokens 64]
                                                          [--dtypes float32 bfloat16 [auto]]

For each concurrency C the same C prompts go (a) to the embedded server (a child process, ``POST /generate``, C
clients at once, greedy) and (b) through ``model.generate`` in this process, one prompt after the other (greedy,
batch 1, the transformers way without a server; ``--baseline-requests K`` times only the first K of them, to save
time on a slow machine). Both count the tokens actually generated (a sequence may end at EOS
early), so tokens/s = generated tokens / wall time. The ratio is (a)/(b). The numbers are for the machine it runs on,
never a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import torch
from comptrust_compress.models import resolve_model
from comptrust_core.cpu_dtype import choose_cpu_dtype, cpu_summary
from comptrust_serve import launch
from comptrust_serve.embedded.loader import load_model

PROMPTS = [
    "The history of the printing press begins",
    "Here is a short story about a lighthouse keeper who",
    "To bake a loaf of sourdough bread, you first",
    "The three most important ideas in thermodynamics are",
    "In a small village by the sea, every morning",
    "Machine learning models can be compressed by",
    "The difference between weather and climate is",
    "A good way to learn a new language is to",
]


def prompts(count: int) -> list[str]:
    return [f"{PROMPTS[i % len(PROMPTS)]} (#{i})" for i in range(count)]


async def _one(session: aiohttp.ClientSession, url: str, prompt: str, new_tokens: int) -> int:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "details": True, "do_sample": False}}
    async with session.post(f"{url}/generate", json=body) as response:
        response.raise_for_status()
        data = await response.json()
    return int(data["details"]["generated_tokens"])


async def server_rate(url: str, batch: list[str], new_tokens: int) -> tuple[int, float]:
    """All of ``batch`` sent at once, one client each: (generated tokens, seconds)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_one(session, url, p, new_tokens) for p in batch))
        return sum(counts), time.perf_counter() - started


def generate_rate(loaded: Any, batch: list[str], new_tokens: int) -> tuple[int, float]:
    """``batch`` through ``model.generate`` one prompt at a time: (generated tokens, seconds)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    pad = loaded.pad_id
    total = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for prompt in batch:
            inputs = tokenizer(prompt, return_tensors="pt").to(loaded.device)
            eos = list(loaded.eos_ids)
            out = model.generate(
                **inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos
            )
            new = out[0, inputs["input_ids"].shape[1] :].tolist()
            ends = [i for i, t in enumerate(new) if t in loaded.eos_ids]
            total += ends[0] + 1 if ends else len(new)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    return total, time.perf_counter() - started


def _measure(folder: Path, dtype: str, args: argparse.Namespace) -> list[tuple[int, float, float, int, int]]:
    """For each concurrency: (C, server tok/s, generate tok/s, server tokens, generate tokens) in ``dtype``."""
    loaded = load_model(folder, dtype=dtype, device=args.device)
    served_as = str(loaded.dtype).removeprefix("torch.")
    print(f"\n--dtype {dtype}: model {folder.name} on {loaded.device} as {served_as}", flush=True)
    generate_rate(loaded, prompts(1), 8)  # warm-up
    started = time.perf_counter()
    server = launch(folder, max_batch=args.max_batch, dtype=dtype, device=args.device, startup_timeout_s=900)
    rows = []
    with server:
        print(f"embedded server healthy after {time.perf_counter() - started:.1f} s (max batch {args.max_batch})")
        url = server.endpoint.url
        asyncio.run(server_rate(url, prompts(2), 8))  # warm-up
        for concurrency in args.concurrency:
            batch = prompts(concurrency)
            served, served_s = asyncio.run(server_rate(url, batch, args.new_tokens))
            alone, alone_s = generate_rate(loaded, batch[: args.baseline_requests], args.new_tokens)
            rows.append((concurrency, served / served_s, alone / alone_s, served, alone))
            print(f"measured {concurrency} client(s): server {served_s:.1f} s, generate {alone_s:.1f} s", flush=True)
    del loaded
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="alias, checkpoint folder or hub id")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    p.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        help="the dtypes measured side by side (both sides; 'auto' is what this CPU's decision picks)",
    )
    p.add_argument("--threads", type=int, help="torch threads for the baseline (default: torch's choice)")
    p.add_argument(
        "--baseline-requests",
        type=int,
        help="time generate on at most this many of the C prompts (its rate does not depend on C; default: all C)",
    )
    args = p.parse_args()
    folder = Path(resolve_model(args.model).path)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_summary()}")
    if args.device == "cpu":
        auto = choose_cpu_dtype("auto", "bfloat16").dtype
        print(f"--dtype auto computes a bfloat16 checkpoint in {auto} on this CPU (`uv run serve cpu-dtype` says why)")
    measured = {dtype: _measure(folder, dtype, args) for dtype in args.dtypes}

    first = args.dtypes[0]
    print(f"\n{args.new_tokens} new tokens per request, greedy; tokens/s = generated tokens / wall time")
    print(f"CPU: {cpu_summary()}\n")
    head = " | ".join(f"server {d} tok/s" for d in args.dtypes)
    ratios = " | ".join(f"{d} / {first}" for d in args.dtypes[1:])
    gens = " | ".join(f"generate {d} tok/s" for d in args.dtypes)
    print(f"| clients | {head} | {ratios} | {gens} | server / generate ({first}) |")
    print("|---:|" + "---:|" * (3 * len(args.dtypes)))
    for i, concurrency in enumerate(args.concurrency):
        served = [measured[d][i][1] for d in args.dtypes]
        alone = [measured[d][i][2] for d in args.dtypes]
        cells = [
            *(f"{v:.1f}" for v in served),
            *(f"{v / served[0]:.2f}x" for v in served[1:]),
            *(f"{v:.1f}" for v in alone),
            f"{served[0] / alone[0]:.2f}x",
        ]
        print(f"| {concurrency} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
