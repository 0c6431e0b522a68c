"""A latency-bound stand-in for an inference engine: TGI's routes, every answer after a fixed delay.

    python benchmarks/standin_engine.py --delay 1.0 [TGI's flags: --model-id M --hostname H --port P ...]

The ``process`` launcher runs it as it runs ``text-generation-launcher`` (``[serve] engine_command``), so a sweep
serves checkpoints with it for real: a server per cell, started and stopped by the launcher. Each request is answered
by evaluate's fake endpoint (rule-based answers) after ``--delay`` seconds, with no limit on requests in flight: the
time a cell takes is set by its requests, its concurrency and the delay, not by this machine's cores, which is what
a benchmark of the scheduler needs (sweep_cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

from comptrust_evaluate.testing import FakeEndpoint


class SlowEndpoint(FakeEndpoint):
    def __init__(self, delay_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    async def _fault(self, request: Any, body: Any) -> Any:  # every generation route passes here first
        await asyncio.sleep(self.delay_s)
        return await super()._fault(request, body)

    def _seen(self, request: Any, body: Any) -> None:  # keeps no request log: it runs for a whole cell
        return


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = SlowEndpoint(args.delay, port=args.port).start()
    print(f"stand-in engine at {server.url}, {args.delay:g} s per answer", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
