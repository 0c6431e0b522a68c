"""Throughput of the evaluate engine next to a bare aiohttp loop, on a loopback stub server in another process.

    uv run python benchmarks/evaluate_throughput.py [--requests 20000] [--inflight 64 256 1024]
                                                    [--latency-requests 10000 30000] [--latency-inflight 1000]
                                                    [--repeat 3] [--progress log|bar|off]

The stub speaks just enough of TGI's HTTP API (GET /health, GET /info, POST /generate) and answers at once, or after
0.5 s in the latency run. It is a raw asyncio protocol server in its own process, so client and server share neither
a GIL nor an event loop. For each in-flight level it measures, in the same run and against the same stub:

* bare: a semaphore around ``ClientSession.post`` + ``read()`` + ``json.loads``, nothing else;
* bare+gc: the same loop under the engine's garbage-collector settings (:func:`comptrust_evaluate.engine.quiet_gc`),
  which alone take the bare loop's CPU per request down by a third or more at 256 and 1024 in flight: the engine's
  ratio to it is its own work's cost, the stricter comparison;
* engine: ``evaluate_async`` over a prompts file of the same size, writing its records (one flushed NDJSON line
  each) to a temporary run directory, with log-line progress (or ``--progress``), exactly as ``evaluate`` runs;

and prints req/s for both, their ratio, and the CPU microseconds per request of each (this process's CPU time over the
run divided by the requests; the stub's CPU is in the other process). Each measurement is the best of ``--repeat`` runs,
bare and engine alike: on a shared machine other processes' bursts only ever slow a run down. The numbers are for the
machine it runs on: a benchmark, never a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import aiohttp
from comptrust_core.cpu_dtype import cpu_summary
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate_async
from comptrust_evaluate.engine import quiet_gc

_INFO = json.dumps({"model_id": "stub-model", "version": "3.3.0-stub", "max_total_tokens": 4096}).encode()
_ANSWER = json.dumps(
    {
        "generated_text": "and then the story went on quietly.",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 7,
            "prefill": [],
            "tokens": [{"id": i, "text": "w", "logprob": -0.5, "special": False} for i in range(7)],
        },
    }
).encode()


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


_RESPONSES = {
    b"/health": _response("200 OK", b""),
    b"/info": _response("200 OK", _INFO),
    b"/generate": _response("200 OK", _ANSWER),
}
_NOT_FOUND = _response("404 Not Found", b'{"error": "not found"}')


class _StubProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (what aiohttp's client sends)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            path = head.split(b" ", 2)[1]
            self.buf = self.buf[end + 4 + length :]
            self.answer(path)

    def answer(self, path: bytes) -> None:
        """Send the answer to a request for ``path`` (after ``delay`` for /generate)."""
        out = _RESPONSES.get(path, _NOT_FOUND)
        if self.delay > 0 and path == b"/generate":
            asyncio.get_running_loop().call_later(self.delay, self._send, out)
        else:
            self._send(out)

    def _send(self, out: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _serve(sock: socket.socket, delay: float, protocol: Callable[[float], asyncio.Protocol] = _StubProtocol) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: protocol(delay), sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Stub:
    """The stub server in a child process; ``url`` is ready once the context is entered."""

    def __init__(self, delay: float = 0.0, protocol: Callable[[float], asyncio.Protocol] = _StubProtocol) -> None:
        self.delay = delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.proc = mp.get_context("spawn").Process(target=_serve, args=(self.sock, delay, protocol), daemon=True)

    def __enter__(self) -> Stub:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(10)
        self.sock.close()


async def bare(url: str, requests: int, inflight: int) -> tuple[float, float]:
    """(req/s, CPU µs per request) of a plain semaphore + ``ClientSession.post`` loop."""
    body = {"inputs": "q", "parameters": {"max_new_tokens": 16, "details": True, "do_sample": False}}
    sem = asyncio.Semaphore(inflight)
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(i: int) -> None:
            async with sem, session.post(url + "/generate", json={**body, "inputs": f"q{i}"}) as resp:
                json.loads(await resp.read())

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.perf_counter() - started), (time.process_time() - cpu) / requests * 1e6


def _prompts(path: Path, requests: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": f"q{i}", "max_new_tokens": 16}) + "\n" for i in range(requests))
    )
    return path


async def engine(
    url: str, requests: int, inflight: int, tmp: Path, progress: Literal["log", "bar", "off"] = "log"
) -> tuple[float, float, float]:
    """(req/s over the whole call, req/s over the engine's run, CPU µs per request) of ``evaluate_async``."""
    prompts = _prompts(tmp / f"prompts-{requests}.jsonl", requests)
    out = Path(tempfile.mkdtemp(dir=tmp, prefix="run-"))
    config = EvaluateConfig(
        out=out,
        endpoints=(EndpointSpec(url=url, name="stub", protocol="tgi"),),
        prompts=prompts,
        max_concurrency=inflight,
        progress=progress,
    )
    cpu, started = time.process_time(), time.perf_counter()
    summary = await evaluate_async(config)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    (ep,) = summary.endpoints
    if ep.ok != requests:
        raise SystemExit(f"engine finished {ep.ok} ok of {requests} ({ep.errors} errors)")
    lines = sum(1 for _ in (out / "records" / "stub.ndjson").open())
    if lines != requests:
        raise SystemExit(f"engine wrote {lines} records for {requests} requests")
    return requests / wall, ep.rate, cpu / requests * 1e6


async def _bare_tuned(url: str, requests: int, inflight: int) -> tuple[float, float]:
    with quiet_gc():  # the engine's garbage-collector settings, so that the ratio counts the engine's own work only
        return await bare(url, requests, inflight)


async def _measure(
    url: str, requests: int, inflight: int, tmp: Path, *, progress: Literal["log", "bar", "off"], repeat: int
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float, float]]:
    """The best of ``repeat`` interleaved runs of the bare loop, the bare loop under the engine's GC settings, and
    the engine."""
    plain, tuned, eng = [], [], []
    for _ in range(repeat):
        plain.append(await bare(url, requests, inflight))
        tuned.append(await _bare_tuned(url, requests, inflight))
        eng.append(await engine(url, requests, inflight, tmp, progress))
    return max(plain), max(tuned), max(eng)


async def _main(args: argparse.Namespace) -> None:
    best = f"best of {args.repeat}" if args.repeat > 1 else "one run"
    with tempfile.TemporaryDirectory(prefix="comptrust-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with Stub() as stub:
            await bare(stub.url, 2000, 64)  # warm-up: the stub process is up, connections and imports are warm
            print(f"instant stub, {args.requests} requests per measurement ({best} each, interleaved)")
            print("bare: default GC; bare+gc: under the engine's GC settings; engine: whole call (run only)")
            head = ("in flight", "bare req/s", "bare+gc", "engine req/s", "ratio", "vs bare+gc", "CPU µs/req")
            widths = (9, 10, 8, 20, 11, 11, 20)
            print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)) + "  (bare / bare+gc / engine)")
            for inflight in args.inflight:
                (b0, c0), (b1, c1), (rate, run_rate, cpu) = await _measure(
                    stub.url, args.requests, inflight, tmp, progress=args.progress, repeat=args.repeat
                )
                print(
                    f"{inflight:>9} {b0:>10.0f} {b1:>8.0f} {rate:>11.0f} ({run_rate:>6.0f}) "
                    f"{rate / b0:>4.2f} ({run_rate / b0:.2f}) {rate / b1:>4.2f} ({run_rate / b1:.2f}) "
                    f"{c0:>8.0f} / {c1:>4.0f} / {cpu:>4.0f}"
                )
        with Stub(delay=args.latency) as stub:
            k = args.latency_inflight
            ideal = k / args.latency
            for n in args.latency_requests:
                waves = n / k
                print(
                    f"stub answering after {args.latency}s, {n} requests, {k} in flight: {waves:.0f} round trips "
                    f"(ideal {ideal:.0f} req/s; {best})"
                )
                (b0, c0), (b1, c1), (rate, run_rate, cpu) = await _measure(
                    stub.url, n, k, tmp, progress=args.progress, repeat=args.repeat
                )
                print(f"  bare     {b0:>7.0f} req/s ({b0 / ideal:.0%} of ideal), {c0:.0f} CPU µs/req")
                print(f"  bare+gc  {b1:>7.0f} req/s ({b1 / ideal:.0%} of ideal), {c1:.0f} CPU µs/req")
                print(
                    f"  engine   {rate:>7.0f} req/s ({rate / ideal:.0%} of ideal; run only {run_rate:.0f}, "
                    f"{run_rate / ideal:.0%}), {cpu:.0f} CPU µs/req"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--inflight", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument(
        "--latency-requests",
        type=int,
        nargs="+",
        default=[10000, 30000],
        help="requests per latency run, one run each (default 10000 and 30000: 10 and 30 round trips at 1000 in "
        "flight; the first and last round trip, when 1000 connections open and the last answers trickle in, weigh a "
        "third as much in the longer run, which is closer to a long evaluation's steady state)",
    )
    p.add_argument("--latency-inflight", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    p.add_argument("--progress", choices=["log", "bar", "off"], default="log", help="the engine's progress display")
    args = p.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
