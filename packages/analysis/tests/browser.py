"""A minimal headless-Chromium driver over the DevTools protocol (aiohttp websockets), for testing report.html.

Starts Chromium with the flags this offline machine needs, opens a page, collects console errors and uncaught
exceptions, evaluates JavaScript and takes a screenshot. Tests skip when no Chromium is installed (.ci/run installs
Debian's ``chromium``); ``$CHROMIUM`` points at another binary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["PageReport", "chromium_binary", "load_page"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


async def _port(profile: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited early with code {proc.returncode}")
        if marker.is_file():
            first = marker.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        await asyncio.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


async def _drive(url: str, port: int, script: str, timeout_s: float) -> PageReport:
    report = PageReport()
    ids = itertools.count(1)
    pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
    loaded = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 2**20) as ws:

            async def reader() -> None:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                        continue
                    method, params = data.get("method"), data.get("params", {})
                    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                        report.console_errors.append(json.dumps(params.get("args", []))[:500])
                    elif method == "Runtime.exceptionThrown":
                        report.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
                    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                        report.console_errors.append(str(params["entry"].get("text", ""))[:500])
                    elif method == "Page.loadEventFired":
                        loaded.set()

            async def call(method: str, **params: Any) -> dict[str, Any]:
                i = next(ids)
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                pending[i] = fut
                await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
                answer = await asyncio.wait_for(fut, timeout_s)
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

            task = asyncio.create_task(reader())
            try:
                for domain in ("Runtime", "Log", "Page"):
                    await call(f"{domain}.enable")
                await call("Page.navigate", url=url)
                await asyncio.wait_for(loaded.wait(), timeout_s)
                await asyncio.sleep(0.3)  # let late console messages arrive
                value = await call("Runtime.evaluate", expression=script, returnByValue=True)
                report.facts = json.loads(value["result"]["value"])
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                report.screenshot = base64.b64decode(shot["data"])
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return report


def load_page(path: Path, script: str, timeout_s: float = 60.0) -> PageReport:
    """Open ``path`` in headless Chromium; ``script`` must evaluate to a JSON string of facts about the page."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium binary found")
    url = path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="comptrust-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer, zygote and crashpad processes too, so all of them can be stopped
        )
        try:

            async def run() -> PageReport:
                port = await _port(Path(profile), proc, timeout_s)
                return await _drive(url, port, script, timeout_s)

            return asyncio.run(run())
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop Chromium and every process it started (they write into the profile folder until they exit, so
    removing it earlier fails with "Directory not empty"), and wait until they are all gone."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, timeout_s)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
