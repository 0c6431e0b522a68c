"""``python -m comptrust_serve.launchers.guard [--grace S] -- PROGRAM ARGS...``: run an engine that cannot watch its
launcher (TGI, vLLM) so that it still dies with it.

The guard runs PROGRAM as its child in the guard's own process group and watches its stdin, a pipe only the launching
process holds. When that pipe closes (the launcher exited or was killed) or the guard's parent changes, it sends
SIGTERM to PROGRAM, then SIGKILL to the whole group after ``--grace`` seconds. SIGTERM or SIGINT sent to the guard is
passed on to PROGRAM; the guard exits with PROGRAM's exit code.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from types import FrameType

__all__ = ["guard_argv", "main"]


def guard_argv(argv: list[str], grace_s: float) -> list[str]:
    """The command line that runs ``argv`` under the guard with this interpreter."""
    return [sys.executable, "-m", "comptrust_serve.launchers.guard", "--grace", f"{grace_s:g}", "--", *argv]


def _say(line: str) -> None:
    """A line to the server's log; a log on a full disk must not stop the guard from doing its job."""
    with suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def _watch(child: subprocess.Popen[bytes], grace_s: float) -> None:
    parent = os.getppid()
    fd = sys.stdin.fileno()
    while child.poll() is None:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if (ready and not os.read(fd, 4096)) or os.getppid() != parent:
            break
    else:
        return
    _say("comptrust guard: the launching process went away; stopping the server")
    with suppress(ProcessLookupError):
        child.terminate()
    deadline = time.monotonic() + grace_s
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comptrust_serve.launchers.guard")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to run after --")
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        _say(f"comptrust guard: cannot start {command[0]}: {exc}")
        return 127

    def forward(signum: int, _: FrameType | None) -> None:
        with suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    threading.Thread(target=_watch, args=(child, args.grace), name="guard-watch", daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
