"""`evaluate` through a faulty endpoint, next to the same endpoint without faults, in one run.

    uv run python benchmarks/faulty_endpoint.py [--prompts 3000] [--kill-after 20] [--steady 30000]

The stub (a raw asyncio TGI stub in its own process, see evaluate_throughput.py) draws for every attempt, with a
seeded generator: 10% HTTP 500, 5% HTTP 429 with ``Retry-After: 1``, 3% a reset connection, 2% a hang of 60 s,
3% malformed JSON; the rest answer at once. Three measurements, each ``evaluate`` with default flags and
``--max-concurrency 64``, run as a user runs it (its own process):

1. kill and rerun: ``--prompts`` prompts against the faulty stub, killed with -9 after ``--kill-after`` s (or
   once half its records are written, if that comes first) and run again with the same command: both runs' wall
   time together, records per prompt, the share of ok records;
2. steady state: ``--steady`` prompts against the fault-free stub and against the faulty one, each run to the end:
   the throughput of the middle 60% of its records (by finish time, so start-up and the tail of retried hangs are
   out), and their ratio.

The numbers are for the machine it runs on, never a test assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from comptrust_core.cpu_dtype import cpu_summary
from evaluate_throughput import _NOT_FOUND, _RESPONSES, Stub, _response, _StubProtocol

FAULTS = ((0.10, "500"), (0.05, "429"), (0.03, "reset"), (0.02, "hang"), (0.03, "malformed"))
_500 = _response("500 Internal Server Error", b'{"error": "stub fault"}')
_429 = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b'Content-Length: 22\r\n\r\n{"error": "slow down"}'
)
_MALFORMED = _response("200 OK", b'{"generated_text": "unterminated')


class FaultyProtocol(_StubProtocol):
    rng = random.Random(int(os.environ.get("FAULTY_SEED", "7")))
    faulty = os.environ.get("FAULTY", "1") == "1"

    def answer(self, path: bytes) -> None:
        if path != b"/generate" or not self.faulty:
            super().answer(path)
            return
        x, fault = self.rng.random(), None
        for rate, name in FAULTS:
            if x < rate:
                fault = name
                break
            x -= rate
        if fault == "500":
            self._send(_500)
        elif fault == "429":
            self._send(_429)
        elif fault == "reset":
            if self.transport is not None:
                self.transport.abort()
        elif fault == "hang":
            asyncio.get_running_loop().call_later(60.0, self._send, _RESPONSES.get(path, _NOT_FOUND))
        elif fault == "malformed":
            self._send(_MALFORMED)
        else:
            self._send(_RESPONSES[path])


def _prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(n)))
    return path


def _command(url: str, prompts: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "comptrust_evaluate",
        *("--endpoint", url, "--name", "stub", "--protocol", "tgi", "--prompts", str(prompts), "--out", str(out)),
        *("--max-concurrency", "64", "--progress", "log"),
    ]


def _records(out: Path) -> list[dict[str, object]]:
    path = out / "records" / "stub.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steady_rate(records: list[dict[str, object]]) -> float:
    """Records per second over the middle 60% of the run (by finish time)."""
    times = sorted(datetime.fromisoformat(str(r["finished_at"]).replace("Z", "+00:00")).timestamp() for r in records)
    lo, hi = int(len(times) * 0.2), int(len(times) * 0.8)
    return (hi - lo) / (times[hi] - times[lo])


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _run(command: list[str], log: Path, kill_after: float | None = None, kill_at: int = 0) -> tuple[float, int]:
    """Run ``command``; with ``kill_after``, SIGKILL it after that many seconds or once its records reach
    ``kill_at`` lines, whichever comes first."""
    began = time.monotonic()
    records = Path(command[command.index("--out") + 1]) / "records" / "stub.ndjson"
    with log.open("a") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        while kill_after is not None and proc.poll() is None:
            if time.monotonic() - began >= kill_after or (kill_at and _lines(records) >= kill_at):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        code = proc.wait()
    return time.monotonic() - began, code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=3000)
    p.add_argument("--kill-after", type=float, default=20.0)
    p.add_argument("--steady", type=int, default=30000)
    p.add_argument("--keep", type=Path, metavar="DIR", help="write the runs and their log here (kept)")
    args = p.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        log = root / "evaluate.log"
        os.environ["FAULTY"] = "1"
        with Stub(protocol=FaultyProtocol) as faulty:
            prompts = _prompts(root / "kill.jsonl", args.prompts)
            command = _command(faulty.url, prompts, root / "kill")
            first, code1 = _run(command, log, kill_after=args.kill_after, kill_at=args.prompts // 2)
            done_first = len(_records(root / "kill")) if (root / "kill" / "records").exists() else 0
            second, code2 = _run(command, log)
            records = _records(root / "kill")
            keys = [r["key"] for r in records]
            ok = sum(r["status"] == "ok" for r in records)
            print(f"faulty stub, {args.prompts} prompts, 64 in flight, default flags:")
            print(f"  run 1 killed with -9 after {first:.1f} s (exit {code1}), {done_first} records by then")
            if code1 != -signal.SIGKILL:
                print("  (run 1 ended before it could be killed)")
            print(f"  run 2 (same command) {second:.1f} s, exit {code2}; both runs {first + second:.1f} s")
            print(
                f"  records {len(records)} for {args.prompts} prompts ({len(set(keys))} distinct), "
                f"ok {ok} ({100 * ok / len(records):.1f}%)"
            )
            steady_prompts = _prompts(root / "steady.jsonl", args.steady)
            took, code = _run(_command(faulty.url, steady_prompts, root / "steady-faulty"), log)
            if code != 0 or len(_records(root / "steady-faulty")) != args.steady:
                raise SystemExit(f"the faulty steady run failed (exit {code}); see {log}")
            faulty_rate = _steady_rate(_records(root / "steady-faulty"))
        os.environ["FAULTY"] = "0"
        with Stub(protocol=FaultyProtocol) as clean:
            took_clean, code = _run(_command(clean.url, steady_prompts, root / "steady-clean"), log)
            if code != 0:
                raise SystemExit(f"the fault-free steady run failed (exit {code}); see {log}")
            clean_rate = _steady_rate(_records(root / "steady-clean"))
        print(f"steady state, {args.steady} prompts, 64 in flight (middle 60% of each run's records):")
        print(f"  fault-free {clean_rate:8.0f} req/s  (whole run {took_clean:.1f} s)")
        print(f"  faulty     {faulty_rate:8.0f} req/s  (whole run {took:.1f} s)")
        print(f"  faulty / fault-free = {faulty_rate / clean_rate:.2f}")
        tail = [line for line in log.read_text().splitlines() if "stub:" in line][-3:]
        print("last progress lines:", *tail, sep="\n  ")


if __name__ == "__main__":
    main()
