"""Suite-wide test settings.

- Nothing may reach a model hub or download weights during tests.
- Ctrl-C works in-process whatever launched the suite: a background job of a non-interactive shell (``cmd &`` in a
  script, some CI runners) starts with SIGINT ignored, Python then keeps it ignored, and a SIGINT a test sends to
  itself is discarded (the fleet-interrupt tests hung on exactly that). The suite restores Python's own handler.
- Every test has a time limit (``timeout`` in pyproject.toml; longer ones carry ``@pytest.mark.timeout(N)``). The
  limit fails the test and prints every thread's stack (pytest-timeout's signal method); if the test cannot be
  interrupted (stuck in C), faulthandler prints every thread's stack and ends the run a minute later.
- The suite runs on two workers (pytest-xdist, ``-n 2 --dist loadscope`` in pyproject.toml; ``-n 0`` for one
  process). Each test module is one unit of work, so a module's fixtures are built once; the tests that drive a real
  engine on SmolLM2 are one unit, run one after another on one worker, and so are the Ray cluster's, while the other
  worker takes the rest (:data:`_SERIAL_GROUPS`). SmolLM2 is converted once per machine (``smollm2`` below, under
  a lock when both workers ask at once).
- Tests leave no process-wide state behind: :func:`_no_leaked_process_state` fails the test that changes a signal
  handler or the signal mask, an environment variable, a logging handler or level, the working directory, or leaves
  a thread running.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per worker (and per process it starts), set before torch is first imported: two workers
    # on 2 cores with two OpenMP threads each spin against each other (GPTQ on SmolLM2 measured 279 s beside the
    # other worker against 57 s alone); one thread costs a test alone little (GPTQ 58 s, the gate simulation 15.5 s
    # against 11.7 s).
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_SERIAL_GROUPS = {
    "real-engines": (
        "tests/test_e2e.py",
        "tests/test_vllm_engine.py",
        "tests/test_harms_e2e.py",
        "packages/compress/tests/test_smollm2.py",
    ),
    "ray-cluster": ("tests/test_ray_sweep.py",),
}
"""Modules whose tests each keep both cores busy (a real engine or llm-compressor on SmolLM2; a three-node Ray
cluster): each group runs on one worker, in order, so no two of them contend for this 2-core machine's CPUs."""


def _work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module's serial group, or its module."""
    module = nodeid.split("::", maxsplit=1)[0]
    for name, modules in _SERIAL_GROUPS.items():
        if module in modules:
            return name
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the serial groups are handed out first (a worker each), while the light modules fill in beside them; a
        # stable sort, so the order inside each module stays as written
        first = list(_SERIAL_GROUPS)

        def rank(item: pytest.Item) -> int:
            unit = _work_unit(item.nodeid)
            return first.index(unit) if unit in first else len(first)

        items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with each test module one unit of work, and the modules of each serial group one unit
    together (xdist's own ``loadgroup`` does not group under pytest 9.2, whose node ids it can no longer suffix)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the collection's order: the serial groups first
    return ModuleUnits(config, log)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The converted SmolLM2-135M-Instruct folder (comptrust's cache; converted on first use, once per machine)."""
    from comptrust_compress.models import resolve_model

    return resolve_model("smollm2-135m-instruct").path


_HARD_STOP_GRACE_S = float(os.environ.get("COMPTRUST_TEST_HARD_STOP_GRACE_S", "60"))
"""How long after a test's own limit faulthandler ends the run, when pytest-timeout could not stop the test."""

_THREAD_GRACE_S = 5.0
"""How long a thread a test started may take to finish after the test before it counts as leaked."""

_PROCESS_THREADS = ("tqdm._monitor.TMonitor",)
"""Threads a library starts once per process and keeps on purpose (tqdm's monitor), never a test's leak."""


def _test_limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    return float(item.config.getini("timeout") or 0)


_HARD_STOP_FD = pytest.StashKey[int]()
"""A copy of the real stderr, taken while output is not captured: during a test, file descriptor 2 is pytest's
capture file, whose contents are lost when faulthandler ends the process."""


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_HARD_STOP_FD] = os.dup(sys.__stderr__.fileno() if sys.__stderr__ is not None else 2)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HARD_STOP_FD in config.stash:
        os.close(config.stash[_HARD_STOP_FD])
        del config.stash[_HARD_STOP_FD]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _test_limit(item)
    if limit > 0:
        faulthandler.dump_traceback_later(limit + _HARD_STOP_GRACE_S, exit=True, file=item.config.stash[_HARD_STOP_FD])
    try:
        yield
    finally:
        if limit > 0:
            faulthandler.cancel_dump_traceback_later()


_IMPORT_TIME_ENV = ("KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR")
"""Variables a library sets for the rest of the process when it is first imported or used, whichever test gets
there first: scikit-learn's and joblib's ``__init__`` (``os.environ.setdefault``), torch's inductor cache on its first
compile. Not a test's leak."""


def _environ() -> dict[str, str]:
    # pytest itself names the running test and phase in PYTEST_CURRENT_TEST
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def _environ_after(before: dict[str, str]) -> dict[str, str]:
    now = _environ()
    for name in _IMPORT_TIME_ENV:
        if name not in before:
            now.pop(name, None)
    return now


def _signal_state() -> dict[str, Any]:
    state: dict[str, Any] = {}
    for sig in signal.valid_signals():
        # SIGALRM belongs to pytest-timeout, which sets its handler per test and resets it when a test fails
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGALRM):
            continue
        try:
            state[signal.Signals(sig).name] = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
    state["mask"] = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    return state


def _own_handlers(logger: logging.Logger) -> tuple[logging.Handler, ...]:
    # pytest's logging plugin adds and removes its own capture handlers around every phase of every test
    return tuple(h for h in logger.handlers if not type(h).__module__.startswith("_pytest"))


def _logging_state() -> dict[str, Any]:
    loggers: dict[str, logging.Logger] = {"<root>": logging.getLogger()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            loggers[name] = logger
    return {
        name: (_own_handlers(logger), logger.level, logger.propagate, logger.disabled)
        for name, logger in loggers.items()
    }


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {before.get(key, '<unset>')!r} -> {after.get(key, '<unset>')!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, "<unset>") != after.get(key, "<unset>")
    ]


def _is_process_thread(thread: threading.Thread) -> bool:
    kind = type(thread)
    return f"{kind.__module__}.{kind.__qualname__}" in _PROCESS_THREADS


def _leftover_threads(before: set[int]) -> list[threading.Thread]:
    deadline = time.monotonic() + _THREAD_GRACE_S
    while True:
        left = [
            t
            for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and t is not threading.current_thread()
        ]
        left = [t for t in left if not _is_process_thread(t)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_leaked_process_state() -> Iterator[None]:
    """Fail the test that leaves process-wide state changed; put back what can be put back, so the next test
    starts clean."""
    signals, environ, logs = _signal_state(), _environ(), _logging_state()
    cwd = os.getcwd()
    threads = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    leaks: list[str] = []
    if (now_signals := _signal_state()) != signals:
        leaks += [f"signal {line}" for line in _changed(signals, now_signals)]
        for name, handler in signals.items():
            if name != "mask" and handler is not None and now_signals.get(name) != handler:
                signal.signal(signal.Signals[name], handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, [signal.Signals(s) for s in signals["mask"]])
    if (now_environ := _environ_after(environ)) != environ:
        leaks += [f"environment {line}" for line in _changed(environ, now_environ)]
        for name in now_environ.keys() - environ.keys():
            del os.environ[name]
        os.environ.update(environ)
    if (now_logs := _logging_state()) != logs:
        leaks += [f"logger {line}" for line in _changed(logs, now_logs) if line.split(":")[0] in logs]
        for name, (handlers, level, propagate, disabled) in logs.items():
            logger = logging.getLogger() if name == "<root>" else logging.getLogger(name)
            for handler in _own_handlers(logger):
                if handler not in handlers:
                    logger.removeHandler(handler)
            for handler in handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
    if os.getcwd() != cwd:
        leaks.append(f"working directory: {cwd} -> {os.getcwd()}")
        os.chdir(cwd)
    leaks += [f"thread still running: {t.name} ({type(t).__qualname__})" for t in _leftover_threads(threads)]
    if leaks:
        pytest.fail("the test left process-wide state behind:\n  " + "\n  ".join(leaks), pytrace=False)


@pytest.fixture
def cpu_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Literal["bf16", "no-bf16"]], None]:
    """``cpu_kind("no-bf16")`` makes this machine look, to the CPU dtype decision (comptrust_core.cpu_dtype), like a
    CPU without bfloat16 hardware (bfloat16 measured at 0.25x float32's speed, the issue's AVX2-only EPYC);
    ``cpu_kind("bf16")`` like one with it (AMX, measured 2.4x). A synthetic profile goes into a cache of the test's own
    (``COMPTRUST_CACHE``, which child processes inherit), so no measurement runs and no machine's result leaks in."""
    from comptrust_core.cpu_dtype import store_profile, synthetic_profile

    monkeypatch.setenv("COMPTRUST_CACHE", str(tmp_path / "cpu-kind-cache"))

    def use(kind: Literal["bf16", "no-bf16"]) -> None:
        fast = kind == "bf16"
        store_profile(
            synthetic_profile(
                bfloat16=(True, 2.4) if fast else (False, 0.25),
                capability="AVX512" if fast else "AVX2",
                cpu="test CPU with AMX" if fast else "test CPU, AVX2 only",
            )
        )

    return use


def fill_until_full(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem refuses more."""
    with path.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


class SmallFilesystem:
    """A real filesystem of a few MiB (tmpfs) mounted at ``path``, that fills up like any disk: ``grow(mib)`` makes
    it larger (``mount -o remount``), as freeing space would."""

    def __init__(self, path: Path, mib: float) -> None:
        import subprocess

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(mib * 1024)}k", "tmpfs", str(path)], check=True)

    def fill(self, name: str = "filler") -> Path:
        """Take every free byte with a file of ``name`` (as another job would); returns it."""
        path = self.path / name
        fill_until_full(path)
        return path

    def grow(self, mib: float) -> None:
        import subprocess

        subprocess.run(["mount", "-o", f"remount,size={int(mib * 1024)}k", str(self.path)], check=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[float], SmallFilesystem]]:
    """``small_fs(mib)`` mounts a real tmpfs of that size under the test's folder (root only: the test skips, saying
    why, where it cannot mount one); every one is unmounted after the test."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real small filesystem needs root and mount(8) (tmpfs); the write-layer tests cover the rest")
    mounted: list[SmallFilesystem] = []

    def make(mib: float) -> SmallFilesystem:
        try:
            fs = SmallFilesystem(tmp_path / f"small-fs-{len(mounted)}", mib)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot mount a tmpfs here ({exc}); the write-layer tests cover the rest")
        mounted.append(fs)
        return fs

    yield make
    for fs in mounted:
        fs.unmount()
