"""``serve ls`` and ``serve stop``: the containers comptrust started, found by their labels on the Docker engine.

uv run serve ls [--all-hosts]            # name, engine, checkpoint, URL, status, GPUs of every comptrust container
uv run serve stop NAME [NAME ...]        # stop and remove those (endpoint name, container name or id prefix)
uv run serve stop --all                  # every comptrust container on the engine
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comptrust_core import ConfigError

from comptrust_serve.launchers.containers import LABEL, Owner
from comptrust_serve.launchers.docker import connect, container_display_name, managed_containers, remove_container

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["ManagedContainer", "list_managed", "ls_main", "stop_main", "stop_managed"]


@dataclass(frozen=True)
class ManagedContainer:
    """One comptrust container as ``serve ls`` shows it."""

    id: str
    container: str
    name: str
    engine: str
    checkpoint: str
    url: str
    status: str
    gpus: str
    orphaned: bool

    @classmethod
    def of(cls, listed: dict[str, Any]) -> ManagedContainer:
        """From the engine's container listing (``Id``, ``Names``, ``Labels``, ``State``)."""
        labels = listed.get("Labels") or {}
        owner = Owner.from_labels(labels)
        return cls(
            id=str(listed.get("Id", "")),
            container=container_display_name(listed),
            name=labels.get(LABEL["name"], ""),
            engine=labels.get(LABEL["engine"], ""),
            checkpoint=labels.get(LABEL["checkpoint"], ""),
            url=labels.get(LABEL["url"], ""),
            status=str(listed.get("State", "")),
            gpus=labels.get(LABEL["gpus"], ""),
            orphaned=owner is not None and owner.is_gone(),
        )

    def matches(self, key: str) -> bool:
        return key in (self.name, self.container) or (len(key) >= 6 and self.id.startswith(key))


def list_managed(client: DockerClient) -> list[ManagedContainer]:
    """Every container on the engine that comptrust started, sorted by endpoint name."""
    return sorted((ManagedContainer.of(c) for c in managed_containers(client)), key=lambda m: (m.name, m.container))


def stop_managed(
    client: DockerClient, keys: Sequence[str] = (), *, everything: bool = False, stop_timeout_s: float = 10.0
) -> list[str]:
    """Stop and remove the comptrust containers named by ``keys`` (or all of them); their container names.

    An unknown key is a :class:`ConfigError` naming the servers there are, and nothing is stopped.
    """
    described = [ManagedContainer.of(c) for c in managed_containers(client)]
    if not everything:
        unknown = [k for k in keys if not any(m.matches(k) for m in described)]
        if unknown:
            there = ", ".join(sorted({m.name for m in described})) or "none"
            raise ConfigError(f"no comptrust server named {', '.join(unknown)} (running: {there}); see `serve ls`")
        described = [m for m in described if any(m.matches(k) for k in keys)]
    for managed in described:
        remove_container(client, managed.id, stop_timeout_s)
    return [m.container for m in described]


def _table(rows: list[ManagedContainer]) -> str:
    header = ("NAME", "ENGINE", "URL", "STATUS", "GPUS", "CHECKPOINT", "CONTAINER")
    cells = [header] + [
        (
            m.name,
            m.engine,
            m.url,
            m.status + (" (orphaned)" if m.orphaned else ""),
            m.gpus or "-",
            m.checkpoint,
            m.container,
        )
        for m in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def ls_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="serve ls", description="List the containers comptrust started on the engine.")
    p.parse_args(argv)
    rows = list_managed(connect())
    print(_table(rows) if rows else "no comptrust containers on the engine")
    return 0


def stop_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="serve stop", description="Stop and remove containers comptrust started.")
    p.add_argument("names", nargs="*", metavar="NAME", help="endpoint name, container name, or container id prefix")
    p.add_argument("--all", action="store_true", help="every comptrust container on the engine")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to stop gracefully before killing")
    args = p.parse_args(argv)
    if bool(args.names) == args.all:
        raise ConfigError("name the servers to stop (see `serve ls`), or pass --all, not both")
    stopped = stop_managed(connect(), args.names, everything=args.all, stop_timeout_s=args.timeout)
    for name in stopped:
        print(f"stopped {name}")
    if not stopped:
        print("no comptrust containers on the engine")
    return 0
