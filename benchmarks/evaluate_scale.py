"""One `evaluate` run of a million prompts against the instant stub: memory, speed over its length, kill -9 and rerun.

    uv run python benchmarks/evaluate_scale.py [--prompts 1000000] [--inflight 256] [--window 100000]
                                               [--skip-full] [--keep DIR]

The stub is evaluate_throughput.py's raw asyncio TGI stub in its own process, answering at once. ``evaluate`` runs as
a user runs it (``python -m comptrust_evaluate --prompts FILE --max-concurrency 256 --progress log``, its own
process), twice over the same prompts file:

1. full: one run to the end. Its peak RSS (the kernel's high-water mark for that process, from ``wait4``), its
   throughput over the first and the last ``--window`` records (by their ``finished_at``, in file order, which is
   finish order), their ratio, and the size of its records file;
2. kill and rerun: a second run directory, killed with SIGKILL once about half its records are written, then run
   again with the same command: the peak RSS of each run, the seconds from the rerun's start to its first new
   record (its first new request was sent before that, so this is an upper bound), the rerun's wall time, and the
   final record count, distinct keys and statuses.

The numbers are for the machine it runs on, never a test assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from comptrust_core.cpu_dtype import cpu_summary
from evaluate_throughput import Stub

_FINISHED = re.compile(rb'"finished_at":\s*"([^"]+)"')
_KEY = re.compile(rb'"key":\s*"([^"]+)"')
_STATUS = re.compile(rb'"status":\s*"([^"]+)"')


def _prompts(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for start in range(0, n, 100_000):
            chunk = range(start, min(n, start + 100_000))
            f.write("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in chunk))
    return path


def _command(url: str, prompts: Path, out: Path, inflight: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "comptrust_evaluate",
        *("--endpoint", url, "--name", "stub", "--protocol", "tgi", "--prompts", str(prompts), "--out", str(out)),
        *("--max-concurrency", str(inflight), "--progress", "log"),
    ]


class _LineCounter:
    """Complete lines of a file that only grows (or is cut back to its last complete line once, by a resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def poll(self) -> int:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return self.lines
        if size < self.offset:  # cut back: count again from the start
            self.offset = self.lines = 0
        if size > self.offset:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(size - self.offset)
            complete = chunk.rfind(b"\n") + 1
            self.lines += chunk.count(b"\n", 0, complete)
            self.offset += complete
        return self.lines


def _vm_hwm(pid: int) -> int:
    """The process's peak resident set so far, in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _run(
    command: list[str], log: Path, *, kill_at: int = 0, first_after: int = -1
) -> tuple[float, int, int, float | None]:
    """Run ``command`` to its end, or SIGKILL it once its records reach ``kill_at`` lines. Returns (wall s, exit code,
    peak RSS bytes, seconds to the first record beyond ``first_after`` lines or None)."""
    records = _LineCounter(Path(command[command.index("--out") + 1]) / "records" / "stub.ndjson")
    began = time.monotonic()
    first: float | None = None
    with log.open("a") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                peak = max(peak, usage.ru_maxrss * 1024)
                break
            lines = records.poll() if (kill_at or first is None) else 0
            if first is None and first_after >= 0 and lines > first_after:
                first = time.monotonic() - began
            if kill_at and lines >= kill_at:
                peak = max(peak, _vm_hwm(proc.pid))
                proc.send_signal(signal.SIGKILL)
            time.sleep(0.01 if first is None else 0.2)
    return time.monotonic() - began, proc.returncode, peak, first


def _scan(path: Path) -> tuple[list[float], int, int, dict[str, int]]:
    """(finished_at of every record in file order, records, distinct keys, records per status)."""
    times: list[float] = []
    keys: set[bytes] = set()
    statuses: dict[str, int] = {}
    n = 0
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            finished, key, status = _FINISHED.search(line), _KEY.search(line), _STATUS.search(line)
            assert finished and key and status, line[:200]
            times.append(datetime.fromisoformat(finished.group(1).decode().replace("Z", "+00:00")).timestamp())
            keys.add(key.group(1))
            s = status.group(1).decode()
            statuses[s] = statuses.get(s, 0) + 1
    return times, n, len(keys), statuses


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=1_000_000)
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--window", type=int, default=100_000, help="records in the first and last throughput windows")
    p.add_argument("--skip-full", action="store_true", help="only the kill -9 and rerun measurement")
    p.add_argument("--keep", type=Path, metavar="DIR", help="write the runs and their log here (kept)")
    args = p.parse_args()
    print(f"CPU: {cpu_summary()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="comptrust-scale-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        log = root / "evaluate.log"
        prompts = _prompts(root / "prompts.jsonl", args.prompts)
        print(f"instant stub, {args.prompts} prompts, {args.inflight} in flight, default flags (log: {log})")
        with Stub() as stub:
            if not args.skip_full:
                out = root / "full"
                wall, code, peak, _ = _run(_command(stub.url, prompts, out, args.inflight), log)
                path = out / "records" / "stub.ndjson"
                if code != 0:
                    raise SystemExit(f"the full run failed (exit {code}); see {log}")
                times, n, distinct, statuses = _scan(path)
                w = min(args.window, n // 2)
                head, tail = w / (times[w] - times[0]), w / (times[-1] - times[-w - 1])
                print(f"full run: {wall:.1f} s, exit {code}, peak RSS {_gib(peak)}")
                print(f"  records {n} ({distinct} distinct keys), {statuses}, {path.stat().st_size / 1e6:.0f} MB")
                print(f"  first {w} records {head:.0f} req/s, last {w} {tail:.0f} req/s, ", end="")
                print(f"last / first = {tail / head:.2f}")
            out = root / "killed"
            command = _command(stub.url, prompts, out, args.inflight)
            wall1, code1, peak1, _ = _run(command, log, kill_at=args.prompts // 2)
            at_kill = _LineCounter(out / "records" / "stub.ndjson").poll()
            wall2, code2, peak2, first = _run(command, log, first_after=at_kill)
            times, n, distinct, statuses = _scan(out / "records" / "stub.ndjson")
            print(f"run 1 killed with -9 after {wall1:.1f} s (exit {code1}), {at_kill} complete records, ", end="")
            print(f"peak RSS {_gib(peak1)}")
            first_text = f"{first:.1f} s" if first is not None else "never"
            print(f"rerun (same command): first new record after {first_text}, {wall2:.1f} s in all, ", end="")
            print(f"exit {code2}, peak RSS {_gib(peak2)}")
            print(f"  records {n} for {args.prompts} prompts ({distinct} distinct keys), {statuses}")


if __name__ == "__main__":
    main()
