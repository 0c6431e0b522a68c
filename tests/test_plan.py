from __future__ import annotations

from pathlib import Path

import pytest
from comptrust_core import ConfigError

from comptrust.sweep.cli import main
from comptrust.sweep.plan import load_plan, parse_plan
from comptrust.sweep.stages import request_counts

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_plan_is_dense_plus_each_method_once() -> None:
    plan = load_plan(ROOT / "examples" / "quickstart.toml")
    names = [c.name for c in plan.cells()]
    assert names == [
        "smollm2-135m-dense",
        "smollm2-135m-gptq-w4-g128-seed0",
        "smollm2-135m-awq-w4-g128-seed0",
        "smollm2-135m-magnitude-2of4",
        "smollm2-135m-sparsegpt-2of4-seed0",
        "smollm2-135m-wanda-2of4-seed0",
    ]
    assert plan.out_dir() == Path("sweeps/quickstart")
    assert plan.study.device == "cpu" and plan.serve.launcher == "embedded" and plan.serve.slots() == [()]
    assert plan.evaluate.suite == "quick"
    assert all(c.calib_samples == 16 and c.calib_seqlen == 128 for c in plan.cells() if c.calib_seed is not None)


def test_paper_plan_is_the_compressed_trust_grid() -> None:
    plan = load_plan(ROOT / "examples" / "paper.toml")
    cells = plan.cells()
    assert len(cells) == 1 + 9 + 9 + 3
    assert {c.model.source for c in cells} == {"meta-llama/Llama-2-13b-chat-hf"}
    for method in ("gptq", "awq"):
        grid = {(c.bits, c.calib_seed) for c in cells if c.method == method}
        assert grid == {(b, s) for b in (3, 4, 8) for s in (0, 1, 2)}
        assert {c.group_size for c in cells if c.method == method} == {128}
    assert {c.method: c.pattern for c in cells if c.pattern} == {"magnitude": "2:4", "sparsegpt": "2:4", "wanda": "2:4"}
    assert plan.serve.launcher == "docker" and plan.serve.engine == "tgi" and len(plan.serve.slots()) >= 1
    assert plan.evaluate.suite == "decodingtrust" and "mmlu" in (plan.evaluate.tasks or [])
    assert plan.analyze.variant == "dt-compressed-trust"


@pytest.mark.parametrize("example", ["quickstart.toml", "paper.toml"])
def test_dry_run_of_the_examples(
    example: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comptrust_compress import method_names

    # the plans' outputs are relative to the working directory: a quickstart the user ran there must not change what a
    # fresh study's dry run says
    monkeypatch.chdir(tmp_path)
    path = ROOT / "examples" / example
    plan = load_plan(path)
    assert main([str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(plan.cells())} checkpoint(s)" in printed
    for cell in plan.cells():
        assert cell.name in printed
    assert "estimate" in printed and "total: about" in printed
    if "requests per checkpoint: unknown" not in printed:  # the paper plan's data is not on this machine
        assert "smallest drop detectable against the dense base at 80% power" in printed
        # at the family's level (0.05 over configurations x perspectives) a handful of requests per perspective
        # (the quickstart's quick suite) cannot detect anything, and the dry run says so rather than promise a drop
        detectable = "points  on" in printed and "assumed per-request SD 0.5" in printed
        assert detectable or "too few clusters to decide" in printed
        if example == "quickstart.toml":
            assert "points  on" not in printed and "0.05/40 = 0.0013" in printed
    for method in {c.method for c in plan.cells()} - set(method_names()):
        assert f"method {method!r} is not registered in this installation" in printed
    assert not plan.out_dir().exists()  # a dry run writes nothing


def test_dry_run_counts_requests_from_evaluates_plan(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "quickstart.toml"
    counts = request_counts(load_plan(path))
    assert counts and all(n > 0 for n in counts.values())
    assert main([str(path), "--dry-run"]) == 0
    assert f"requests per checkpoint: {sum(counts.values())} (" in capsys.readouterr().out
    limited = parse_plan(path.read_text().replace("max_concurrency = 16", "max_concurrency = 16\nlimit = 1"))
    assert sum(request_counts(limited).values()) < sum(counts.values())


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


HEAD = "[study]\nname = 'x'\n[[models]]\nname = 'm'\nsource = 's'\n"


@pytest.mark.parametrize(
    ("body", "line", "where", "match"),
    [
        (
            "[[methods]]\nname = 'dense'\n[[methods]]\nname = 'gptq'\nbits = [3, 5]\n",
            10,
            "methods#2.bits",
            "2, 3, 4, 8",
        ),
        ("[[methods]]\nname = 'magnitude'\nsparsity = 1.5\n", 8, "methods#1.sparsity", "between 0 and 1"),
        ("[[methods]]\nname = 'magnitude'\npattern = '3:4'\n", 8, "methods#1.pattern", "2:4"),
        ("[[methods]]\nname = 'gptq'\nbits = 4\ncalib_seed = [0, 0]\n", 9, "methods#1.calib_seed", "repeats"),
        ("[[methods]]\nname = 'gptq'\nbits = []\n", 8, "methods#1.bits", "empty list"),
        ("[[methods]]\nname = 'dense'\ncalib_seed = [0, 1]\n", 6, "methods#1", "once per model"),
        ("[[methods]]\nname = 'dense'\n[serve]\ngpus = [0, 0]\n", 9, "serve.gpus", "twice"),
        ("[[methods]]\nname = 'dense'\n[serve]\ngpus = [0]\ngpus_per_server = 2\n", 8, "serve", "only 1 GPU"),
        ("[[methods]]\nname = 'dense'\n[serve]\nengine = 'sglang'\n", 9, "serve.engine", "tgi"),
        (
            "[[methods]]\nname = 'dense'\n[evaluate]\ntasks = ['toxicity']\n[evaluate.limits]\nmmlu = 5\n",
            8,
            "evaluate",
            "limits name mmlu",
        ),
        ("[[methods]]\nname = 'dense'\n[evaluate]\nsample_seed = 1\n", 8, "evaluate", "give sample"),
        ("[[methods]]\nname = 'dense'\n[evaluate]\nlimit = 0\n", 9, "evaluate.limit", "greater than or equal"),
        ("[[methods]]\nname = 'dense'\n[analyze]\nvariant = 'dt-other'\n", 9, "analyze.variant", "dt-main"),
        (
            "[[methods]]\nname = 'dense'\n[evaluate]\ntoxicity_scorer = 'detoxify'\n",
            9,
            "evaluate.toxicity_scorer",
            "'detoxify' is not a toxicity scorer; choose one of hf, offline",
        ),
        (
            "[[methods]]\nname = 'dense'\n[evaluate]\nrefusal_detectors = ['broad', 'clasifier']\n",
            9,
            "evaluate.refusal_detectors",
            "'clasifier' is not a refusal detector; choose from",
        ),
    ],
)
def test_bad_plans_name_the_key_and_its_line(body: str, line: int, where: str, match: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plan(HEAD + body, "p.toml")
    message = str(info.value)
    assert f"line {line}: {where}: " in message and match in message


def test_every_problem_is_listed() -> None:
    body = "bogus = 1\n[[methods]]\nname = 'gptq'\nbits = 5\n[evaluate]\nmax_concurrency = 0\n"
    with pytest.raises(ConfigError, match="3 problem") as info:
        parse_plan(HEAD + body, "p.toml")
    assert "line 6: models#1.bogus: unknown key" in str(info.value) and "evaluate.max_concurrency" in str(info.value)


def test_unregistered_methods_parse() -> None:
    plan = parse_plan(HEAD + "[[methods]]\nname = 'some-future-method'\nbits = 4\n")
    assert [c.name for c in plan.cells()] == ["m-some-future-method-w4"]


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "nope.toml")
