"""The quickstart plan's serving dtype on both kinds of CPU: where bfloat16 is emulated (no bfloat16 hardware) its
``dtype = "auto"`` serves in float32; where the CPU computes bfloat16 fast it keeps the checkpoint's bfloat16. The
server is started exactly as the sweep starts it (its launch options from the plan, its launcher)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from comptrust_serve import launch_checkpoint, open_checkpoint
from comptrust_serve.launchers.embedded import embedded_cpu_dtype
from comptrust_serve.testing import build_tiny_checkpoint

from comptrust.sweep.cli import main
from comptrust.sweep.plan import load_plan
from comptrust.sweep.stages import launch_options

ROOT = Path(__file__).resolve().parents[1]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.mark.timeout(240)
def test_the_quickstart_plan_serves_in_float32_on_a_cpu_without_bf16_hardware(
    tmp_path: Path, cpu_kind: Callable[[Literal["bf16", "no-bf16"]], None]
) -> None:
    plan = load_plan(ROOT / "examples" / "quickstart.toml")
    assert plan.serve.dtype == "auto" and plan.study.device == "cpu"
    cell = plan.cells()[0]
    # stored in bfloat16, as SmolLM2's converted folder and every checkpoint of the plan are
    checkpoint = open_checkpoint(build_tiny_checkpoint(tmp_path / cell.name, dtype="bfloat16"))
    options = launch_options(plan, cell, (), tmp_path / "logs")
    cpu_kind("bf16")  # where the CPU computes bfloat16 fast, the plan keeps the checkpoint's bfloat16
    assert embedded_cpu_dtype(checkpoint, options) == "bfloat16"
    cpu_kind("no-bf16")
    with launch_checkpoint(checkpoint, plan.serve.launcher, options) as server:
        assert server.endpoint.dtype == "float32"
        with _OPENER.open(f"{server.endpoint.url}/info", timeout=10) as response:
            assert json.loads(response.read())["model_dtype"] == "float32"


@pytest.mark.parametrize(("kind", "served"), [("no-bf16", "float32"), ("bf16", "bfloat16")])
def test_the_dry_run_says_which_dtype_the_quickstart_will_serve_in(
    kind: Literal["bf16", "no-bf16"],
    served: str,
    cpu_kind: Callable[[Literal["bf16", "no-bf16"]], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpu_kind(kind)
    assert main([str(ROOT / "examples" / "quickstart.toml"), "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("serving dtype on this CPU"))
    assert line.startswith(f"serving dtype on this CPU ([serve] dtype auto): {served}, ")
    assert ("no bfloat16 hardware" in line) == (served == "float32")
