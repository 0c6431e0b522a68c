"""The ``evaluate`` command: flags to config, one-line errors, endpoints.json, progress lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from comptrust_core import RECORDS_DIR, Endpoint, write_endpoints
from comptrust_evaluate import derive_endpoint_name
from comptrust_evaluate.cli import build_config, main, parser
from comptrust_evaluate.config import Limits
from comptrust_evaluate.progress import EndpointProgress
from comptrust_evaluate.testing import FakeEndpoint


def test_flags_become_a_config(tmp_path: Path) -> None:
    argv = "--endpoint http://h:1 --endpoint http://h:2 --name a --name b --protocol openai --model m"
    argv += " --api-key-env K --suite quick --max-concurrency 8 --limit 2 --retry-errors --out"
    args = parser().parse_args([*argv.split(), str(tmp_path)])
    config = build_config(args)
    assert [(e.name, e.protocol, e.model, e.api_key_env) for e in config.endpoints] == [
        ("a", "openai", "m", "K"),
        ("b", "openai", "m", "K"),
    ]
    assert config.max_concurrency == 8 and config.limit == 2 and config.retry_errors and config.suite == "quick"


def test_task_limit_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--endpoint", "http://h:1", "--suite", "quick", "--out", str(tmp_path), "--limit", "1"]
    args = parser().parse_args([*argv, "--task-limit", "toxicity=3", "--task-limit", " fairness = 2"])
    assert build_config(args).task_limits == (("toxicity", 3), ("fairness", 2))
    assert build_config(parser().parse_args(argv)).task_limits == ()
    for bad in ("toxicity", "toxicity=", "=3", "toxicity=two", "toxicity=0", "toxicity=-1", "toxicity=1.5"):
        code = main([*argv, "--task-limit", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [
            f"evaluate: error: --task-limit {bad!r} is not TASK=N with N a whole number of "
            "at least 1 (e.g. toxicity=20)"
        ], bad
    code = main([*argv, "--task-limit", "nope=3"])
    unknown = capsys.readouterr().err
    assert code == 2 and "--task-limit names 'nope'" in unknown and "toxicity" in unknown


def test_endpoint_names_derive_from_urls() -> None:
    assert derive_endpoint_name("http://127.0.0.1:8080/") == "127.0.0.1_8080"
    assert derive_endpoint_name("https://api.example.com/v1") == "api.example.com"


def test_cli_runs_the_quick_suite(fake: FakeEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["--endpoint", fake.url, "--name", "dense", "--suite", "quick", "--out", str(out), "--limit", "1"])
    assert code == 0
    assert (out / RECORDS_DIR / "dense.ndjson").is_file()
    assert "dense" in capsys.readouterr().out  # the summary table


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--endpoint", "http://127.0.0.1:9", "--suite", "quick", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("evaluate: error: endpoint 127.0.0.1_9")
    code = main(["--endpoint", "http://h:1", "--suite", "nope", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown suite 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "x"}\n{"id": 1, "prompt": "y"}\n')
    code = main(["--endpoint", "http://h:1", "--prompts", str(bad), "--out", str(tmp_path / "r")])
    assert code == 2 and f"prompts file {bad}, line 2: duplicate id '1'" in capsys.readouterr().err


def test_cli_reads_endpoints_json_and_logs_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "hello"}) + "\n")
    with FakeEndpoint() as fake:
        endpoints = tmp_path / "endpoints.json"
        write_endpoints(endpoints, [Endpoint(name="tiny-dense", url=fake.url, protocol="tgi", launcher="embedded")])
        with caplog.at_level(logging.INFO):
            code = main(["--endpoints", str(endpoints), "--prompts", str(prompts), "--out", str(tmp_path / "r")])
    assert code == 0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["endpoints"][0]["name"] == "tiny-dense" and run["endpoints"][0]["launcher"] == "embedded"
    assert "tiny-dense: 1 ok, 0 errors" in caplog.text
    assert "prompts p.jsonl" in capsys.readouterr().out


def test_concurrency_and_compact_flags(tmp_path: Path) -> None:
    base = ["--endpoint", "http://h:1", "--suite", "quick", "--out", str(tmp_path)]
    config = build_config(parser().parse_args(base))
    assert config.limits.adaptive and config.limits.rps is None and not config.compact
    argv = [*base, "--max-concurrency", "16", "--fixed-concurrency", "--rps", "2.5", "--compact"]
    config = build_config(parser().parse_args(argv))
    assert config.limits == Limits(max_concurrency=16, adaptive=False, rps=2.5) and config.compact


def test_progress_line_has_every_column() -> None:
    ep = EndpointProgress(name="e", total=10, done=4, errors=1, tokens=0, taken=5, limit=8)
    ep.sending_now = lambda: 2  # on the wire; the other 3 taken wait to be retried
    ep.retry_kinds.update({"5xx": 2, "429": 1})
    ep.error_kinds["deadline"] = 1
    line = ep.line()
    parts = (
        "4/10 done",
        "req/s",
        "tok/s",
        "2 sending (limit 8)",
        "3 waiting (a slot or a retry)",
        "retries: 5xx 2, 429 1",
    )
    for part in (*parts, "errors: deadline 1", "breaker closed"):
        assert part in line
    ep.breaker, ep.breaker_why = "open", "HTTP 500: boom"
    assert "breaker open (HTTP 500: boom)" in ep.line()


def test_bar_progress_runs_to_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(20)))
    with FakeEndpoint() as fake:
        argv = ["--endpoint", fake.url, "--name", "bar", "--prompts", str(prompts), "--out", str(tmp_path / "r")]
        assert main([*argv, "--progress", "bar"]) == 0
    out = capsys.readouterr().out
    assert "20/20" in out and "tok/s" in out and "retries" in out


def test_the_summary_in_a_log_file_is_plain_lines_never_a_cut_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(5)))
    with FakeEndpoint() as fake:
        name = "an-endpoint-with-a-rather-long-name-for-a-narrow-log"
        argv = ["--endpoint", fake.url, "--name", name, "--prompts", str(prompts), "--out", str(tmp_path / "r")]
        assert main([*argv, "--progress", "off"]) == 0  # stdout captured: not a terminal
        url = fake.url
    out = capsys.readouterr().out
    assert "…" not in out and "┃" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("endpoint ")]
    assert line.startswith(f"endpoint {name} (tgi, {url}): 5/5 done, 5 ok, 0 errors")


def test_suite_selection_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = "--endpoint http://h:1 --suite decodingtrust --data-dir /d --task toxicity --task ood --dt-compat"
    argv += " --sample 0.2 --seed 5 --out"
    config = build_config(parser().parse_args([*argv.split(), str(tmp_path)]))
    assert config.tasks == ("toxicity", "ood") and config.dt_compat and config.data_dir == Path("/d")
    assert config.sample == 0.2 and config.sample_seed == 5
    plain = build_config(parser().parse_args(["--endpoint", "http://h:1", "--suite", "quick", "--out", str(tmp_path)]))
    assert plain.tasks == () and not plain.dt_compat and plain.sample is None and plain.sample_seed == 0
    out = str(tmp_path / "run")
    assert main(["--endpoint", "http://127.0.0.1:9", "--suite", "quick", "--sample", "2", "--out", out]) == 2
    assert "--sample must be a fraction in (0, 1]" in capsys.readouterr().err
    missing = str(tmp_path / "empty")
    assert (
        main(["--endpoint", "http://127.0.0.1:9", "--suite", "decodingtrust", "--data-dir", missing, "--out", out]) == 2
    )
    err = capsys.readouterr().err
    assert "data file(s) the plan needs are missing" in err and "Traceback" not in err
