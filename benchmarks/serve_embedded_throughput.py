"""Throughput of the embedded server through ``POST /generate``: load time, one request, then N concurrent ones.

    uv run python benchmarks/serve_embedded_throughput.py --model DIR [--concurrency 8 32] [--new-tokens 64]

Greedy decoding, ``max_new_tokens`` as given; tokens/s counts the tokens each response reports
(``details.generated_tokens``), so a sequence that ends at EOS early counts what it generated. Prints one line per
measurement; the numbers are for the machine it runs on, never a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import aiohttp
from comptrust_serve import launch

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


async def _one(session: aiohttp.ClientSession, url: str, prompt: str, new_tokens: int) -> int:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": new_tokens, "details": True, "do_sample": False}}
    async with session.post(f"{url}/generate", json=body) as response:
        response.raise_for_status()
        data = await response.json()
    return int(data["details"]["generated_tokens"])


async def _measure(url: str, concurrency: int, new_tokens: int, rounds: int = 1) -> tuple[int, float]:
    """``concurrency`` clients, each sending ``rounds`` requests one after the other."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:

        async def client(c: int) -> int:
            total = 0
            for r in range(rounds):
                i = c * rounds + r
                total += await _one(session, url, PROMPTS[i % len(PROMPTS)] + f" (#{i})", new_tokens)
            return total

        started = time.perf_counter()
        counts = await asyncio.gather(*(client(c) for c in range(concurrency)))
        return sum(counts), time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1, help="requests per client, sent back to back (closed loop)")
    p.add_argument("--dtype")
    p.add_argument("--device")
    args = p.parse_args()
    started = time.perf_counter()
    with launch(args.model, max_batch=args.max_batch, dtype=args.dtype, device=args.device) as server:
        ready = time.perf_counter() - started
        loaded = [line for line in server.log_tail(200).splitlines() if " loaded " in line]
        print(f"start to healthy: {ready:.1f} s ({loaded[-1].split(': ', 1)[-1] if loaded else 'no load line'})")
        url = server.endpoint.url
        asyncio.run(_measure(url, 1, 8))  # warm-up
        for concurrency in [1, *args.concurrency]:
            rounds = 1 if concurrency == 1 else args.rounds
            tokens, seconds = asyncio.run(_measure(url, concurrency, args.new_tokens, rounds))
            print(
                f"concurrency {concurrency:3d} x {rounds} rounds: {tokens:5d} tokens in {seconds:6.2f} s"
                f" = {tokens / seconds:7.1f} tokens/s"
                f" aggregate, {tokens / concurrency / seconds:6.1f} tokens/s per client"
            )


if __name__ == "__main__":
    main()
