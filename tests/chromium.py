"""Headless Chromium for tests, driven over the DevTools protocol (CDP) with the ``websockets`` package.

``Chromium(...)`` starts the system ``chromium`` (Debian's package; .ci/apt-packages.txt) with a
fresh profile, a DevTools port chosen by Chromium itself (``--remote-debugging-port=0``, read back
from ``DevToolsActivePort`` in the profile) and, when given a WAV, a fake microphone that plays it
(in a loop) with the permission prompt auto-accepted. ``open(url)`` creates a tab and returns a
``Page``: ``evaluate`` a JavaScript expression, ``screenshot``, and ``problems`` (console errors,
uncaught exceptions, failed loads the browser logged). The flags that keep Chromium off the
network (background networking, component updates, sync, QUIC) matter on a machine without it:
without them its first connections are refused and logged as errors.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

BINARIES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0


def chromium_binary() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class CdpError(RuntimeError):
    """A DevTools command failed, or the browser went away."""


class Chromium:
    """One headless Chromium process; use as ``async with Chromium(fake_audio=wav) as browser``."""

    def __init__(self, fake_audio: Path | None = None, window: tuple[int, int] = (1100, 720)) -> None:
        binary = chromium_binary()
        if binary is None:
            raise CdpError(f"none of {', '.join(BINARIES)} is installed (apt-get install chromium)")
        self.binary = binary
        self.fake_audio = fake_audio
        self.window = window
        self.profile = Path(tempfile.mkdtemp(prefix="emostream-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}  # session id -> events
        self._reader: asyncio.Task[None] | None = None

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--headless=new",
            "--no-sandbox",  # root in a container
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            f"--window-size={self.window[0]},{self.window[1]}",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ]
        if self.fake_audio is not None:
            args += [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={self.fake_audio}",
            ]
        return [*args, "about:blank"]

    async def __aenter__(self) -> Chromium:
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            port, path = await self._devtools_address()
            self.ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=2**26, compression=None)
            self._reader = asyncio.create_task(self._read())
        except BaseException:
            self._stop_process()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            try:
                async with asyncio.timeout(5):
                    await self.send("Browser.close")
            except (CdpError, TimeoutError):
                pass
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._stop_process()

    def _stop_process(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _devtools_address(self) -> tuple[int, str]:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise CdpError(
                    f"chromium exited with {self.proc.returncode} before it listened: {self.command()}"
                )
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/devtools/"):
                return int(lines[0]), lines[1].strip()
            await asyncio.sleep(0.05)
        raise CdpError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT_S:g} s")

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    future = self._pending.pop(msg["id"], None)
                    if future is not None and not future.done():
                        future.set_result(msg)
                else:
                    self._events.setdefault(msg.get("sessionId", ""), []).append(msg)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One CDP command; its ``result``, or CdpError with the browser's error."""
        assert self.ws is not None
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = future
        await self.ws.send(json.dumps(msg))
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            reply = await future
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def open(self, url: str) -> Page:
        """A new tab with console and log events on, navigated to ``url``."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Runtime", "Log", "Page"):
            await page.send(f"{domain}.enable")
        await page.send("Page.navigate", {"url": url})
        return page


class Page:
    """One tab, reached through its flattened CDP session."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-able), awaiting it if it is a promise."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, poll_s: float = 0.1) -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{expression!r} still falsy after {timeout_s:g} s; problems: {self.problems()}"
                )
            await asyncio.sleep(poll_s)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries seen so far."""
        out = []
        for event in self.browser._events.get(self.session, []):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(
                    "console: "
                    + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                )
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(
                    "exception: " + str(details.get("exception", {}).get("description", details.get("text")))
                )
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        return out
