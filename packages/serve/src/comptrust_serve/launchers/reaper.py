"""The watchdog behind the docker launcher's "no orphans": ``python -m comptrust_serve.launchers.reaper URL ID S``.

It waits until its standard input closes. When the launching process has stopped the container itself, it writes
:data:`DONE` first, and there is nothing left to do; when it dies without doing so (a crash, SIGKILL), the pipe just
closes: then the watchdog stops and removes the container ``ID`` on the engine at ``URL``, giving it ``S`` seconds.
It runs in its own session, so a terminal's Ctrl-C reaches only the launching process, which tears down in order.
"""

from __future__ import annotations

import signal
import sys

DONE = b"stopped\n"


def main(argv: list[str]) -> int:
    base_url, container_id, stop_timeout = argv[0], argv[1], float(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = b""
    while chunk := sys.stdin.buffer.read(4096):
        received += chunk
    if received == DONE:
        return 0
    import docker
    from docker.errors import DockerException

    from comptrust_serve.launchers.removal import remove_container

    try:
        remove_container(
            docker.DockerClient(base_url=base_url, timeout=int(stop_timeout) + 30), container_id, stop_timeout
        )
    except DockerException:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
