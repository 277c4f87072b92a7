"""Test helpers for the WebSocket server: real servers (subprocess or in-process thread) and clients.

``ServeProcess`` runs ``emostream serve --port 0`` as a subprocess and reads the port it bound
from its "listening on" line; ``InProcessServer`` runs the same ``EmoServer`` on a thread with
its own event loop. Both bind 127.0.0.1 and stop within bounded time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

LISTENING = re.compile(r"listening on ws://([^:\s]+):(\d+)")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
ESTIMATE_KEYS = (
    "type",
    "stream",
    "seq",
    "t_start_s",
    "t_end_s",
    "label",
    "confidence",
    "probs",
    "speech",
    "latency_ms",
)


class ServeProcess:
    """``emostream serve`` in a subprocess on a free loopback port (``--port 0``)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "models.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._listening = threading.Event()

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=Path(__file__).resolve().parents[1],
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("emostream serve did not start:\n" + "".join(self.lines[-40:]))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and not self._listening.is_set():
                self.port = int(m.group(2))
                self._listening.set()
        self._listening.set()  # exited: wake start()

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit code (killed after STOP_TIMEOUT_S)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()

    @property
    def output(self) -> str:
        return "".join(self.lines)


class InProcessServer:
    """The real ``EmoServer`` on a background thread with its own event loop."""

    def __init__(self, runtime: Any, limits: Any, access: Any) -> None:
        from streamer.server import EmoServer

        self.server = EmoServer(runtime, limits, access)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.error is not None:
            raise RuntimeError(f"in-process server did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        assert self._thread is not None
        self._thread.join(STOP_TIMEOUT_S)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def listening(host: str, port: int) -> None:
                self.port = port
                self._ready.set()

            await self.server.run("127.0.0.1", 0, self._stop, listening)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by __enter__
            self.error = exc
            self._ready.set()


# ---- audio and clients --------------------------------------------------------------------------------


def synth_audio(seconds: float, sample_rate_hz: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Seeded speech-like test signal: a gliding tone with noise, (frames, channels) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    f_hz = 180.0 + 60.0 * np.sin(2 * np.pi * 0.7 * t)
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(f_hz) / sample_rate_hz)
    x = tone[:, None] + 0.05 * rng.standard_normal((n, channels))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def encode(block: np.ndarray, encoding: str) -> bytes:
    if encoding == "pcm_s16le":
        return (block * 32767.0).round().astype("<i2").tobytes()
    return block.astype("<f4").tobytes()


@dataclass
class StreamResult:
    ready: dict[str, Any] | None = None
    estimates: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    close_code: int | None = None

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.others]


async def collect(ws: ClientConnection, result: StreamResult, timeout_s: float) -> None:
    """Read messages into ``result`` until the server closes (or ``timeout_s``)."""
    try:
        async with asyncio.timeout(timeout_s):
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "ready":
                    result.ready = msg
                elif kind == "estimate":
                    result.estimates.append(msg)
                elif kind == "end":
                    result.end = msg
                elif kind == "error":
                    result.error = msg
                else:
                    result.others.append(msg)
    except (ConnectionClosed, TimeoutError):
        pass
    result.close_code = ws.close_code


async def stream_audio(
    url: str,
    audio: np.ndarray,
    sample_rate_hz: int,
    encoding: str = "pcm_s16le",
    *,
    stream: str | None = None,
    frame_s: float = 0.05,
    speed: float = 1.0,
    stop: bool = True,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> StreamResult:
    """One ingest client: start, audio at ``speed`` x real time in ``frame_s`` frames, stop; collect replies."""
    result = StreamResult()
    start: dict[str, Any] = {
        "type": "start",
        "sample_rate": sample_rate_hz,
        "encoding": encoding,
        "channels": int(audio.shape[1]),
    }
    if stream is not None:
        start["stream"] = stream
    async with connect(url + "/ingest", additional_headers=headers, max_size=2**22, compression=None) as ws:
        await ws.send(json.dumps(start))
        reader = asyncio.create_task(collect(ws, result, timeout_s))
        step = max(1, round(frame_s * sample_rate_hz))
        t0 = time.monotonic()
        try:
            for i in range(0, audio.shape[0], step):
                wait_s = i / sample_rate_hz / speed - (time.monotonic() - t0)
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                await ws.send(encode(audio[i : i + step], encoding))
            if stop:
                await ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass
        await reader
    return result


def check_estimate(msg: dict[str, Any], labels: Sequence[str]) -> None:
    """Every required field, and probabilities over the model's labels summing to 1."""
    for key in ESTIMATE_KEYS:
        assert key in msg, f"estimate lacks {key!r}: {msg}"
    assert msg["type"] == "estimate"
    assert isinstance(msg["seq"], int) and msg["seq"] >= 0
    assert 0.0 <= msg["t_start_s"] <= msg["t_end_s"]
    assert isinstance(msg["speech"], bool)
    assert msg["latency_ms"] >= 0.0
    if msg["speech"]:
        assert set(msg["probs"]) == set(labels)
        assert abs(sum(msg["probs"].values()) - 1.0) < 1e-3
        assert msg["label"] in labels
        assert 0.0 <= msg["confidence"] <= 1.0
