"""Failed writes named as what they are: the errno found wherever it hides, the one-line message, the space check
before a long write, and every command's edge turning one into exit 4 without a traceback."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from comptrust_core import StorageError, run_cli
from comptrust_core.storage import (
    Filesystem,
    as_os_error,
    check_free_space,
    filesystem_of,
    human_bytes,
    is_storage_error,
    storage_errno,
    storage_error,
)


class SafetensorError(Exception):
    """What safetensors (Rust) raises on a full disk: no errno, only its text."""


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_the_errno_of_a_refused_write_is_found_wherever_it_hides(code: int) -> None:
    plain = OSError(code, "refused")
    assert storage_errno(plain) == code
    try:
        try:
            raise plain
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert storage_errno(outer) == code and as_os_error(outer) is plain
    rust = SafetensorError(f"Error while serializing: I/O error: refused (os error {code})")
    assert storage_errno(rust) == code and as_os_error(rust).errno == code


def test_other_errors_are_not_storage_errors() -> None:
    assert not is_storage_error(FileNotFoundError(errno.ENOENT, "gone"))
    assert not is_storage_error(PermissionError(errno.EACCES, "no"))
    assert not is_storage_error(ValueError("os error 2"))
    assert not is_storage_error(RuntimeError("boom"))


def test_the_message_names_the_path_its_filesystem_and_what_to_do(tmp_path: Path) -> None:
    error = storage_error(
        tmp_path / "records" / "a.ndjson", OSError(errno.ENOSPC, "No space left on device"), "records"
    )
    text = str(error)
    assert text.startswith(f"could not write records to {tmp_path / 'records' / 'a.ndjson'}: [Errno 28] No space left")
    assert "filesystem " in text and " free of " in text
    assert "free space there" in text and "rerun the same command" in text and "\n" not in text
    assert error.exit_code == 4 and error.errno == errno.ENOSPC
    assert "read-only" in str(storage_error(tmp_path, OSError(errno.EROFS, "Read-only file system"), "x"))


def test_the_filesystem_of_a_path_not_made_yet_is_its_folders(tmp_path: Path) -> None:
    found = filesystem_of(tmp_path / "not" / "yet" / "there.json")
    assert found is not None and found.total > 0 and 0 <= found.free <= found.total


def test_a_long_write_is_refused_when_clearly_short_and_warned_when_tight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("comptrust_core.storage.filesystem_of", lambda _: Filesystem("/data", 100 * 2**20, 2**30))
    with pytest.raises(StorageError, match=r"the checkpoint x needs about 200\.0 MiB under .*100\.0 MiB free of"):
        check_free_space(tmp_path, 200 * 2**20, "the checkpoint x")
    with caplog.at_level(logging.WARNING):
        check_free_space(tmp_path, 90 * 2**20, "the checkpoint x")
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "may run out" in caplog.text
    caplog.clear()
    check_free_space(tmp_path, 10 * 2**20, "the checkpoint x")
    assert not caplog.records


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (512, 3 * 2**20, 1.5 * 2**30)] == ["512 B", "3.0 MiB", "1.5 GiB"]


@pytest.mark.parametrize(
    "raised",
    [
        OSError(errno.ENOSPC, "No space left on device", "/data/out.json"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_every_command_turns_a_refused_write_into_one_line_and_exit_4(
    raised: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    def main(argv: list[str] | None) -> int:
        raise raised

    assert run_cli(main, [], prog="tool") == 4
    err = capsys.readouterr().err
    assert err.startswith("tool: error: could not write its output to ") and err.count("\n") == 1
    assert "No space left on device" in err and "Traceback" not in err


def test_other_errors_still_raise() -> None:
    def main(argv: list[str] | None) -> int:
        raise PermissionError(errno.EACCES, "no")

    with pytest.raises(PermissionError):
        run_cli(main, [], prog="tool")
