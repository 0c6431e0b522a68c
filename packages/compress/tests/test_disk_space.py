"""A checkpoint and the disk: its size known before it is written (and the start refused when the disk clearly cannot
hold it), and a disk that fills while it is saved leaves nothing at --out, no partial files, and one line (exit 4)
saying how much space it needs. Injected at the write layer, and on a real small filesystem (root only)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from comptrust_compress import CompressConfig, compress
from comptrust_compress.cli import main
from comptrust_compress.methods.base import CompressionMethod, Job
from comptrust_compress.methods.magnitude import MagnitudePruning
from comptrust_compress.space import checkpoint_bytes, parameter_count
from comptrust_core import StorageError
from comptrust_core.storage import Filesystem


def _run(model: Path, out: Path, method: str = "magnitude", **kwargs: Any) -> Path:
    options = {"sparsity": 0.5} if method == "magnitude" else {}
    return compress(CompressConfig(model=str(model), method=method, out=out, ppl_tokens=64, **{**options, **kwargs}))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def test_the_size_of_a_checkpoint_is_known_before_it_is_written(tiny_model: Path, work: Path) -> None:
    params = sum(t.numel() for t in _tensors(tiny_model))
    assert parameter_count(tiny_model) == params
    dense = _run(tiny_model, work / "dense", "dense")
    estimate = checkpoint_bytes(tiny_model, Job(), store_bytes=2, bits=None, packed=False)
    actual = _folder_bytes(dense) - (dense / "comptrust.json").stat().st_size
    assert abs(estimate - actual) <= 0.1 * actual  # the same weights in the same dtype, the same other files
    widths = {"model.layers.0.mlp.up_proj": (128, 64)}
    packed = checkpoint_bytes(
        tiny_model,
        Job(widths=widths, group_sizes={"model.layers.0.mlp.up_proj": 32}),
        store_bytes=2,
        bits=4,
        packed=True,
    )
    assert packed < estimate  # a 4-bit layer takes a quarter of its 16-bit bytes, plus its scales


def _tensors(folder: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    return [t for path in folder.glob("*.safetensors") for t in load_file(str(path)).values()]


def test_a_disk_clearly_too_small_is_refused_before_any_work(
    tiny_model: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("comptrust_core.storage.filesystem_of", lambda _: Filesystem("/small", 1000, 10**6))

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded although the disk could not hold its checkpoint")

    monkeypatch.setattr("comptrust_compress.hf.load_model", no_loading)
    with pytest.raises(StorageError, match=r"the checkpoint .* needs about .* under .*filesystem /small: 1000 B free"):
        _run(tiny_model, work / "ckpt")
    assert list(work.iterdir()) == []


class SafetensorError(Exception):
    """What safetensors raises on a full disk."""


@pytest.mark.parametrize(
    "refusal",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EIO, "Input/output error"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["ENOSPC", "EIO", "safetensors"],
)
def test_a_disk_that_fills_while_saving_leaves_nothing_behind(
    tiny_model: Path, work: Path, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    real_save = CompressionMethod.save

    def save_then_fail(self: CompressionMethod, model: Any, tokenizer: Any, folder: Path, *rest: Any) -> None:
        real_save(self, model, tokenizer, folder, *rest)  # some files are there when the disk fills
        raise refusal

    monkeypatch.setattr(CompressionMethod, "save", save_then_fail)
    with pytest.raises(StorageError) as caught:
        _run(tiny_model, work / "ckpt")
    message = str(caught.value)
    assert message.startswith("could not write the checkpoint (about ") and f"to {work / 'ckpt'}" in message
    assert "its partial files were removed and nothing is at --out" in message and "\n" not in message
    assert list(work.iterdir()) == []  # no checkpoint, no hidden temporary folder


def test_the_command_says_it_in_one_line_and_exits_4(
    tiny_model: Path, work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CompressionMethod, "save", full)
    argv = ["--model", str(tiny_model), "--method", "magnitude", "--sparsity", "0.5", "--out", str(work / "c")]
    assert main([*argv, "--ppl-tokens", "64", "--device", "cpu"]) == 4
    err = capsys.readouterr().err
    assert err.count("compress: error:") == 1 and "No space left on device" in err and "Traceback" not in err
    assert list(work.iterdir()) == []


@pytest.mark.timeout(300)
def test_on_a_real_filesystem_that_fills_while_saving(
    tiny_model: Path, small_fs: Callable[[float], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    size = parameter_count(tiny_model) * 2 / 2**20  # the checkpoint's MiB
    fs = small_fs(size * 3)
    out = fs.path / "ckpt"
    real_apply = MagnitudePruning.apply

    def apply_while_something_fills_the_disk(self: MagnitudePruning, *args: Any) -> None:
        real_apply(self, *args)
        fs.fill("other-work")  # after the space check, before the save: another job takes the space

    monkeypatch.setattr(
        "comptrust_compress.methods.magnitude.MagnitudePruning.apply", apply_while_something_fills_the_disk
    )
    with pytest.raises(StorageError, match=r"\[Errno 28\] No space left on device \(filesystem "):
        _run(tiny_model, out)
    assert sorted(p.name for p in fs.path.iterdir()) == ["other-work"]  # no checkpoint, no partial files
    (fs.path / "other-work").unlink()
    monkeypatch.undo()
    fs.grow(size * 4)
    assert _run(tiny_model, out) == out and (out / "comptrust.json").is_file()
