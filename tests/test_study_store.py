"""The study store of a cluster sweep (issue 20, must 2): records flushed in whole chunks, a rerun rebuilding the run
from them, an older attempt fenced off, checkpoints uploaded manifest last. On a local path and on a real S3 API
(moto's server on loopback, through s3fs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from comptrust_core import MANIFEST_FILE

from comptrust.sweep.store import PUT_TRIES, RunSync, StaleAttempt, StoreRefused, StudyStore


def _lines(start: int, stop: int) -> bytes:
    return b"".join(b'{"n": %d}\n' % i for i in range(start, stop))


def _records(run: Path) -> bytes:
    return (run / "records" / "ep.ndjson").read_bytes()


def _write(run: Path, data: bytes) -> None:
    folder = run / "records"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ep.ndjson", "ab") as f:
        f.write(data)


def _roundtrip(store: StudyStore, tmp_path: Path) -> None:
    first = RunSync(store, "cell", tmp_path / "a", every_records=5, every_s=60, node="node-a")
    assert first.restore() == 0
    (tmp_path / "a" / "run.json").write_text('{"run": 1}')
    _write(tmp_path / "a", _lines(0, 7) + b'{"n": 7, "half')  # a line still being written
    assert first.pending() == 7
    assert first.flush() == 7
    _write(tmp_path / "a", b' a line"}\n' + _lines(8, 10))
    assert first.flush() == 3
    _write(tmp_path / "a", _lines(10, 12))  # written, never flushed: lost with the node
    assert store.read_text("runs/cell.attempt") == f"{first.attempt} node-a\n"

    # the node is lost; a rerun elsewhere rebuilds the run from the store
    second = RunSync(store, "cell", tmp_path / "b", every_records=5, every_s=60, node="node-b")
    assert second.restore() == 10
    assert _records(tmp_path / "b") == _lines(0, 7) + b'{"n": 7, "half a line"}\n' + _lines(8, 10)
    assert (tmp_path / "b" / "run.json").read_text() == '{"run": 1}'
    with pytest.raises(StaleAttempt, match="took this cell over"):
        first.flush()  # the old attempt, were it still alive, may not write any more
    _write(tmp_path / "b", _lines(10, 20))
    second.finish()
    chunks = store.names("runs/cell/records/ep.ndjson.chunks")
    assert len(chunks) == 1 and chunks[0].endswith("-whole.ndjson"), chunks
    whole = _lines(0, 7) + b'{"n": 7, "half a line"}\n' + _lines(8, 20)
    assert _records(store.materialize_run("cell", tmp_path / "c")) == whole

    # a third attempt (say, the cell rerun for its errors) starts from the whole copy
    third = RunSync(store, "cell", tmp_path / "d", every_records=5, every_s=60)
    assert third.restore() == 20
    _write(tmp_path / "d", _lines(20, 22))
    third.flush()
    assert _records(store.materialize_run("cell", tmp_path / "e")) == whole + _lines(20, 22)


def _checkpoint(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / MANIFEST_FILE).write_text('{"name": "c"}')
    return folder


def _checkpoint_upload(store: StudyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _checkpoint(tmp_path / "ckpt")
    real_put = store.put_file

    def dies_at_the_manifest(path: Path, rel: str) -> None:
        if rel.endswith(MANIFEST_FILE):
            raise ConnectionError("the node died mid-upload")
        real_put(path, rel)

    with monkeypatch.context() as m:
        m.setattr(store, "put_file", dies_at_the_manifest)
        with pytest.raises(ConnectionError):
            store.put_checkpoint(local, "c")
    assert store.exists("checkpoints/c/model.safetensors")
    assert not store.has_checkpoint("c"), "a checkpoint without its manifest is not a checkpoint"
    store.put_checkpoint(local, "c")
    assert store.has_checkpoint("c")
    got = store.checkpoint_dir("c", tmp_path / "cache")
    assert (got / "sub" / "tokenizer.json").read_text() == "{}"
    assert (got / "model.safetensors").read_bytes() == b"weights"


def test_records_and_checkpoints_on_a_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StudyStore(str(tmp_path / "store"))
    assert store.is_local
    _roundtrip(store, tmp_path / "run")
    local = _checkpoint(tmp_path / "ckpt")
    store.put_checkpoint(local, "c")
    assert store.has_checkpoint("c") and store.checkpoint_dir("c", tmp_path / "cache") == tmp_path / "store" / (
        "checkpoints/c"
    )  # a filesystem store is served in place, never copied
    assert not list((tmp_path / "store").rglob("*.tmp")), "every write renamed into place"


_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    """A bucket on moto's S3 server on loopback, reached through s3fs with the endpoint from the environment (as a
    user points s3fs at MinIO or another S3 API). fsspec runs its I/O on a loop thread it keeps for the life of the
    process; the first request starts it here, before any test."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**_S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("study")
        fs.pipe_file("study/warm", b"")
        fs.cat_file("study/warm")
        yield "study"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3(s3_bucket: str, request: pytest.FixtureRequest) -> str:
    return f"s3://{s3_bucket}/{request.node.name}/study"


def test_records_on_s3(s3: str, tmp_path: Path) -> None:
    store = StudyStore(s3)
    assert not store.is_local
    _roundtrip(store, tmp_path)


def test_checkpoints_on_s3_are_uploaded_manifest_last(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _checkpoint_upload(StudyStore(s3), tmp_path, monkeypatch)


def test_a_store_url_without_its_filesystem_says_what_to_install() -> None:
    with pytest.raises(Exception, match="install the filesystem for nosuchfs://"):
        StudyStore("nosuchfs://bucket/study")


def test_an_object_store_that_refuses_a_put_is_retried_then_fails_with_its_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("comptrust.sweep.store.PUT_BACKOFF_S", 0.0)
    store = StudyStore("memory://study-refusals")
    refusals = [3]

    def pipe_file(path: str, data: bytes) -> None:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise OSError("SlowDown: please reduce your request rate")
        memory[path] = data

    memory: dict[str, bytes] = {}
    monkeypatch.setattr(store.fs, "pipe_file", pipe_file)
    store.write_text("cells/a.json", "{}")  # refused three times, then taken
    assert list(memory) == [store.path("cells/a.json")] and refusals == [0]
    assert caplog.text.count("the study store refused cells/a.json") == 3

    refusals[0] = 100
    with pytest.raises(StoreRefused) as caught:
        store.write_text("cells/b.json", "{}")
    message = str(caught.value)
    assert message.startswith(
        f"the study store memory://study-refusals refused to write cells/b.json {PUT_TRIES} times"
    )
    assert "SlowDown: please reduce your request rate" in message and caught.value.exit_code == 4


def test_a_full_disk_under_a_path_store_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    store = StudyStore(str(tmp_path / "store"))
    store.write_text("runs/a.started", "x\n")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(
        StoreRefused, match=r"could not write a file of the study store to .*runs/a\.started: \[Errno 28\]"
    ):
        store.write_text("runs/a.started", "y\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()) == ["a.started"]
    assert (tmp_path / "store" / "runs" / "a.started").read_text() == "x\n"
