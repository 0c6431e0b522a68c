"""A write the disk refuses (full, over quota, failing, read-only) stops the run: nothing more is sent, what was on the
wire gets one more try, the file ends on a whole record, the run says how many records are safe and exits 4, and a
rerun once there is space completes with exactly one record per request. Injected at the write layer (portable), and
on a real small filesystem (root only)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from comptrust_core import RECORDS_DIR, StorageError
from comptrust_core.storage import Filesystem
from comptrust_evaluate import EndpointSpec, EvaluateConfig, evaluate
from comptrust_evaluate.cli import main as evaluate_main
from comptrust_evaluate.store import RecordWriter
from comptrust_evaluate.testing import FakeEndpoint

PROMPTS = 3000
CONCURRENCY = 16


def _answer(prompt: str) -> str:
    return "an answer that takes some room on disk " * 4


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": f"question {i}"}) + "\n" for i in range(PROMPTS)))
    return path


class WriteFault:
    """``os.write`` that refuses the writes to files under ``root`` once ``budget`` bytes went there: the write that
    crosses it puts in what fits (a partial write, as a kernel does) and the next one fails with ``code``."""

    def __init__(self, root: Path, budget: int, code: int) -> None:
        self.root, self.budget, self.code = str(root), budget, code
        self.real = os.write
        self.active = True

    def __call__(self, fd: int, data: Any) -> int:
        if not self.active or not self._ours(fd):
            return self.real(fd, data)
        if self.budget <= 0:
            raise OSError(self.code, os.strerror(self.code))
        n = self.real(fd, bytes(data)[: self.budget])
        self.budget -= n
        return n

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[int, int], WriteFault]:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell the run's files apart")

    def make(budget: int, code: int) -> WriteFault:
        injected = WriteFault(tmp_path / "run", budget, code)
        monkeypatch.setattr(os, "write", injected)
        return injected

    return make


def _config(url: str, out: Path, prompts: Path) -> EvaluateConfig:
    return EvaluateConfig(
        out=out,
        endpoints=(EndpointSpec(url=url, name="fake"),),
        prompts=prompts,
        progress="off",
        max_concurrency=CONCURRENCY,
    )


def _whole_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the records file must end on a whole line"
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS], ids=["ENOSPC", "EDQUOT", "EIO", "EROFS"]
)
def test_a_refused_write_stops_the_run_and_a_rerun_completes_it(
    code: int, tmp_path: Path, prompts: Path, fault: Callable[[int, int], WriteFault]
) -> None:
    out = tmp_path / "run"
    records = out / RECORDS_DIR / "fake.ndjson"
    with FakeEndpoint(answer=_answer) as fake:
        injected = fault(300_000, code)
        with pytest.raises(StorageError) as caught:
            evaluate(_config(fake.url, out, prompts))
        sent = sum(r.path == "/generate" or r.path.endswith("/completions") for r in fake.requests)
        injected.active = False
        message = str(caught.value)
        on_disk = _whole_lines(records)
        assert caught.value.exit_code == 4 and "\n" not in message
        assert message.startswith(f"could not write records to {records}: [Errno {code}]")
        assert f"{len(on_disk):,} records are whole on disk in {out}" in message
        lost = int(message.split(" finished requests were lost", maxsplit=1)[0].rsplit(", ", 1)[1].replace(",", ""))
        assert 0 < len(on_disk) < PROMPTS
        # nothing was sent after the failure but what was already taken: at most a slot's worth of workers each
        assert sent <= len(on_disk) + lost + CONCURRENCY * 8
        assert sent < PROMPTS / 2
        assert len({r["key"] for r in on_disk}) == len(on_disk)

        summary = evaluate(_config(fake.url, out, prompts))  # the space is back: the rerun does only what is missing
    after = _whole_lines(records)
    assert len(after) == PROMPTS and len({r["key"] for r in after}) == PROMPTS
    assert all(r["status"] == "ok" for r in after)
    assert summary.endpoints[0].resumed == len(on_disk)


def test_the_command_says_it_in_one_line_and_exits_4(
    tmp_path: Path, prompts: Path, fault: Callable[[int, int], WriteFault], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with FakeEndpoint(answer=_answer) as fake:
        fault(200_000, errno.ENOSPC)
        code = evaluate_main(["--endpoint", fake.url, "--name", "fake", "--prompts", str(prompts), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 4
    errors = [line for line in captured.err.splitlines() if line.startswith("evaluate: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "records are whole on disk" in errors[0]
    assert "Traceback" not in captured.err and f"{PROMPTS}/{PROMPTS}" not in captured.out


def test_a_failed_write_leaves_no_part_of_a_line_and_gets_one_last_try(tmp_path: Path) -> None:
    from comptrust_core import Record

    path = tmp_path / "run" / "records" / "x.ndjson"
    failures: list[OSError] = []
    writer = RecordWriter(path, on_failure=failures.append)

    def record(i: int) -> Record:
        return Record(
            key=f"k{i}",
            endpoint="x",
            endpoint_url="http://x",
            task="t",
            perspective="p",
            item_id=str(i),
            request={"prompt": "p"},
            protocol="tgi",
            template="client",
            status="ok",
            text="a" * 100,
            latency_s=0.1,
            attempts=1,
            finished_at="2026-01-01T00:00:00Z",
        )

    real = os.write
    budget = [len(record(0).model_dump_json()) + 1 + 50]  # the first record fits, the second is cut in the middle

    def flaky(fd: int, data: Any) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data)[: budget[0]])
        budget[0] -= n
        return n

    os.write = flaky
    try:
        writer.write(record(0))
        writer.write(record(1))
        writer.write(record(2))  # held: nothing is written after a failure
        assert [f.errno for f in failures] == [errno.ENOSPC]
        assert writer.written == 1 and writer.held == (2, 0)
        assert len(_whole_lines(path)) == 1  # the partial second line was cut back
        budget[0] = 10**6  # space freed: close's one last try writes what is held
        writer.close()
    finally:
        os.write = real
    assert [r["key"] for r in _whole_lines(path)] == ["k0", "k1", "k2"] and writer.held == (0, 0)


def test_a_run_that_will_not_fit_is_warned_about_at_start(
    tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("comptrust_evaluate.space.filesystem_of", lambda _: Filesystem("/small", 100_000, 10**6))
    with FakeEndpoint(answer=_answer) as fake, caplog.at_level(logging.WARNING, logger="comptrust_evaluate"):
        evaluate(_config(fake.url, tmp_path / "run", prompts))
    warnings = [r.getMessage() for r in caplog.records if "requests left need about" in r.getMessage()]
    assert len(warnings) == 2  # at start (estimated from the first request), then measured on what was written
    assert f"{PROMPTS} requests left" in warnings[0] and "estimated from its first request" in warnings[0]
    assert "measured on the records written so far" in warnings[1] and "filesystem /small" in warnings[1]


@pytest.fixture
def run_cli_subprocess() -> Iterator[Callable[[list[str]], subprocess.CompletedProcess[str]]]:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "comptrust_evaluate", *argv],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )

    yield run


@pytest.mark.timeout(300)
def test_on_a_real_full_filesystem(
    small_fs: Callable[[float], Any],
    tmp_path: Path,
    run_cli_subprocess: Callable[[list[str]], subprocess.CompletedProcess[str]],
) -> None:
    fs = small_fs(1.5)
    prompts = tmp_path / "many.jsonl"
    count = 5000
    prompts.write_text(
        "".join(json.dumps({"id": i, "prompt": f"question {i} " + "x" * 40}) + "\n" for i in range(count))
    )
    out = fs.path / "run"
    records = out / RECORDS_DIR / "fake.ndjson"
    with FakeEndpoint(answer=_answer) as fake:
        argv = ["--endpoint", fake.url, "--name", "fake", "--prompts", str(prompts), "--out", str(out)]
        first = run_cli_subprocess([*argv, "--progress", "off", "--max-concurrency", "32"])
        assert first.returncode == 4, first.stderr[-2000:]
        errors = [line for line in first.stderr.splitlines() if line.startswith("evaluate: error:")]
        assert len(errors) == 1 and "[Errno 28] No space left on device" in errors[0]
        assert f"filesystem {fs.path}" in errors[0] and "Traceback" not in first.stderr
        kept = _whole_lines(records)
        assert 0 < len(kept) < count and f"{len(kept):,} records are whole on disk" in errors[0]

        fs.grow(16)
        second = run_cli_subprocess([*argv, "--progress", "off", "--max-concurrency", "32"])
        assert second.returncode == 0, second.stderr[-2000:]
    done = _whole_lines(records)
    assert len(done) == count and len({r["key"] for r in done}) == count
    assert all(r["status"] == "ok" for r in done)
