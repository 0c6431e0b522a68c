from __future__ import annotations

from pathlib import Path

import pytest
from comptrust_core import ConfigError

from comptrust.sweep.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_plan_is_dense_plus_magnitude() -> None:
    plan = load_plan(ROOT / "examples" / "quickstart.toml")
    names = [c.name for c in plan.cells()]
    assert names == ["smollm2-135m-dense", "smollm2-135m-magnitude-s0.5"]
    assert plan.out_dir() == Path("sweeps/quickstart")


def test_lists_expand_into_the_grid(tmp_path: Path) -> None:
    p = tmp_path / "plan.toml"
    p.write_text(
        """
[study]
name = "grid"
[[models]]
name = "m"
source = "x"
[[methods]]
name = "gptq"
bits = [3, 4, 8]
group_size = 128
calib_seed = [0, 1, 2]
[[methods]]
name = "wanda"
pattern = "2:4"
"""
    )
    cells = load_plan(p).cells()
    assert len(cells) == 10
    assert cells[0].name == "m-gptq-w3-g128-seed0"
    assert cells[-1].name == "m-wanda-2of4"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[study]\nname='x'\n", "models"),
        ("[study\n", "not valid TOML"),
        ("[study]\nname='x'\nbogus=1\n[[models]]\nname='m'\nsource='s'\n[[methods]]\nname='dense'\n", "bogus"),
        (
            "[study]\nname='x'\n[[models]]\nname='m'\nsource='s'\n[[methods]]\nname='dense'\n[[methods]]\nname='dense'\n",
            "same checkpoint twice",
        ),
        ("[study]\nname='a/b'\n[[models]]\nname='m'\nsource='s'\n[[methods]]\nname='dense'\n", "study.name"),
    ],
)
def test_bad_plans_are_named(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "plan.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_plan(p).cells()


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "nope.toml")
