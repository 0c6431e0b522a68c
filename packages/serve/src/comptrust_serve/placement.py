"""GPU placement: which GPUs each server of a fleet gets. Pure functions, plus :func:`detect_gpus` (``nvidia-smi``).

Each checkpoint gets ``per_server`` GPUs (1, or ``--num-shard``), in the order the checkpoints and GPUs were given:
``--gpus 0,1,2,3`` with ``--num-shard 2`` places the first checkpoint on 0,1 and the second on 2,3. More checkpoints
than GPU slots is an error that says how many slots there are (comptrust does not queue servers: serve the rest in a
second run, or let ``sweep`` run them one after another).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

from comptrust_core import ConfigError

__all__ = ["check_gpus_exist", "detect_gpus", "parse_gpus", "place"]

logger = logging.getLogger(__name__)


def parse_gpus(spec: str) -> tuple[int, ...]:
    """``"0,1,2,3"`` or ``"0-3"`` (or a mix, ``"0,2-3"``) → ``(0, 1, 2, 3)``; each index once, none negative."""
    gpus: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if part.startswith("-"):
            raise ConfigError(f"--gpus {spec!r}: GPU indices cannot be negative")
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError(part)
                gpus.extend(range(first, last + 1))
            else:
                gpus.append(int(part))
        except ValueError:
            raise ConfigError(
                f"--gpus {spec!r}: {part!r} is not a GPU index or range; write e.g. 0,1,2,3 or 0-3"
            ) from None
    repeated = sorted({g for g in gpus if gpus.count(g) > 1})
    if repeated:
        raise ConfigError(f"--gpus {spec!r} names GPU {', '.join(map(str, repeated))} more than once")
    return tuple(gpus)


def place(count: int, gpus: Sequence[int], per_server: int = 1) -> list[tuple[int, ...]]:
    """The GPUs of each of ``count`` servers: consecutive groups of ``per_server`` from ``gpus``.

    No ``gpus`` means no placement (every server gets ``()``: the engine's default devices, or the CPU)."""
    if per_server < 1:
        raise ConfigError(f"--num-shard must be at least 1, not {per_server}")
    if not gpus:
        return [() for _ in range(count)]
    slots = len(gpus) // per_server
    if slots == 0:
        raise ConfigError(
            f"--num-shard {per_server} needs {per_server} GPUs per server but --gpus gives {len(gpus)}; "
            "give more GPUs or a smaller --num-shard"
        )
    if count > slots:
        listed = ",".join(map(str, gpus))
        raise ConfigError(
            f"{count} checkpoints need {count * per_server} GPUs ({per_server} each) but --gpus {listed} holds "
            f"{slots} server slot(s); give more GPUs, a smaller --num-shard, or at most {slots} --model"
        )
    if len(gpus) % per_server:
        logger.warning("GPU(s) %s are left unused: not enough for another server", list(gpus[slots * per_server :]))
    return [tuple(gpus[i * per_server : (i + 1) * per_server]) for i in range(count)]


def check_gpus_exist(gpus: Sequence[int], present: Sequence[int] | None) -> None:
    """Raise :class:`ConfigError` if a requested GPU index is not among ``present`` (``None``: cannot tell, pass)."""
    if present is None:
        return
    missing = [g for g in gpus if g not in present]
    if missing:
        have = ",".join(map(str, present)) or "none"
        raise ConfigError(f"GPU {', '.join(map(str, missing))} does not exist here (nvidia-smi lists: {have})")


def detect_gpus() -> tuple[int, ...] | None:
    """The indices ``nvidia-smi`` lists, ``()`` when it lists none, ``None`` when there is no ``nvidia-smi``."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        out = subprocess.run(
            [binary, "--query-gpu=index", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi failed (%s); assuming no GPU", exc)
        return ()
    if out.returncode != 0:
        return ()
    return tuple(int(line) for line in out.stdout.split() if line.strip().isdigit())
