"""The README's main job (examples/quickstart.toml) through the embedded server and through real vLLM (CPU build,
`serve install-engine vllm`), side by side, in one run: wall time of the serve+evaluate stages, server start-up, and
requests per second per checkpoint, on the same checkpoints.

    uv run serve install-engine vllm
    uv run python benchmarks/sweep_engines.py [--out DIR]

The embedded sweep runs first and compresses the checkpoints; the vLLM sweep gets a copy of them, so both evaluate the
same weights and neither's time includes compression.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from comptrust_core.cpu_dtype import cpu_summary

from comptrust.sweep.cli import main as sweep

ROOT = Path(__file__).resolve().parents[1]

VLLM_SERVE = """[serve]
launcher = "process"
engine = "vllm"
dtype = "auto"
startup_timeout_s = 900
"""


def _plan(out: Path, name: str, vllm: bool) -> Path:
    text = (ROOT / "examples" / "quickstart.toml").read_text()
    text = text.replace('name = "quickstart"', f'name = "{name}"\nout = "{(out / name).as_posix()}"', 1)
    if vllm:
        head, _, tail = text.partition("[serve]")
        rest = tail.split("\n[", 1)[1]
        text = head + VLLM_SERVE + "\n[" + rest
    plan = out / f"{name}.toml"
    plan.write_text(text)
    return plan


def _cells(study: Path) -> dict[str, dict[str, float]]:
    state = json.loads((study / "sweep-state.json").read_text())
    cells = state.get("cells", state)
    out = {}
    for name, cell in cells.items():
        if isinstance(cell, dict) and cell.get("evaluate_s"):
            out[name] = {k: float(cell[k]) for k in ("requests", "evaluate_s", "startup_s") if cell.get(k) is not None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("sweep-engines"))
    args = p.parse_args(argv)
    print(f"CPU: {cpu_summary()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for engine in ("embedded", "vllm"):
        plan = _plan(args.out, f"quickstart-{engine}", engine == "vllm")
        study = args.out / f"quickstart-{engine}"
        if engine == "vllm" and not (study / "checkpoints").exists():
            shutil.copytree(args.out / "quickstart-embedded" / "checkpoints", study / "checkpoints")
        began = time.monotonic()
        code = sweep([str(plan)])
        results[engine] = (code, time.monotonic() - began, _cells(study))
    print("\nthe quickstart plan, same checkpoints, serve + evaluate (compression excluded for vLLM: copied)")
    print(f"{'engine':<10} {'exit':>4} {'wall s':>8} {'start-up s (mean)':>18} {'req/s (all cells)':>18}")
    for engine, (code, wall, cells) in results.items():
        starts = [c["startup_s"] for c in cells.values() if "startup_s" in c]
        requests = sum(c.get("requests", 0) for c in cells.values())
        seconds = sum(c["evaluate_s"] for c in cells.values())
        rate = requests / seconds if seconds else 0.0
        start = sum(starts) / len(starts) if starts else float("nan")
        print(f"{engine:<10} {code:>4} {wall:>8.0f} {start:>18.0f} {rate:>18.2f}")
    for engine, (_, _, cells) in results.items():
        for name, cell in sorted(cells.items()):
            rate = cell.get("requests", 0) / cell["evaluate_s"]
            print(f"  {engine:<8} {name:<34} {rate:6.2f} req/s  start-up {cell.get('startup_s', float('nan')):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
