"""Test helpers for the WebSocket server: real servers (subprocess or in-process thread) and clients.

``ServeProcess`` runs ``emostream serve --port 0`` as a subprocess and reads the port it bound
from its "listening on" line (``benchmarks.serverproc.ServerProcess``, the benchmarks' launcher); ``InProcessServer`` runs the same ``EmoServer`` on a thread with
its own event loop. Both bind 127.0.0.1 and stop within bounded time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostream.benchmarks.serverproc import ServerProcess, serve_command, ws_frame

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


class ServeProcess(ServerProcess):
    """``emostream serve`` in a subprocess on a free loopback port (``--port 0``): the benchmarks' launcher."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        super().__init__(
            serve_command(*args),
            "emostream serve",
            env=env,
            start_timeout_s=START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
        )


class InProcessServer:
    """The real ``EmoServer`` on a background thread with its own event loop."""

    def __init__(self, runtime: Any, limits: Any, access: Any) -> None:
        from emostream.streamer.server.app import EmoServer

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
    arrivals_s: list[float] = field(default_factory=list)  # monotonic arrival time of each estimate
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
                    result.arrivals_s.append(time.monotonic())
                elif kind == "end":
                    result.end = msg
                elif kind == "error":
                    result.error = msg
                else:
                    result.others.append(msg)
    except (ConnectionClosed, TimeoutError):
        pass
    result.close_code = ws.close_code


async def send_paced(
    ws: ClientConnection,
    audio: np.ndarray,
    sample_rate_hz: int,
    encoding: str = "pcm_s16le",
    *,
    frame_s: float = 0.05,
    speed: float = 1.0,
) -> None:
    """Send ``audio`` in ``frame_s`` frames at ``speed`` x real time (frame ``i`` is due at ``i / rate / speed``)."""
    step = max(1, round(frame_s * sample_rate_hz))
    t0 = time.monotonic()
    for i in range(0, audio.shape[0], step):
        wait_s = i / sample_rate_hz / speed - (time.monotonic() - t0)
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        await ws.send(encode(audio[i : i + step], encoding))


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
        try:
            await send_paced(ws, audio, sample_rate_hz, encoding, frame_s=frame_s, speed=speed)
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


# ---- raw WebSocket clients (for half-open, vanishing and never-reading peers) --------------------------


async def raw_connect(
    port: int, path: str, rcvbuf_bytes: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket by hand (HTTP upgrade) and return the raw stream; nothing answers pings."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf_bytes is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)  # buffers at most ~2 KiB unread
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    async with asyncio.timeout(10):
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
    assert b" 101 " in status, status
    return reader, writer


def client_frame(opcode: int, payload: bytes, fin: bool = True, declared_len: int | None = None) -> bytes:
    """A client frame with a random mask; ``declared_len`` lets a test announce more payload than it sends."""
    return ws_frame(payload, opcode, fin, mask=os.urandom(4), declared_len=declared_len)


async def read_server_frames(reader: asyncio.StreamReader, timeout_s: float) -> list[tuple[int, bytes]]:
    """Read unmasked server frames until a close frame, EOF or ``timeout_s``: [(opcode, payload)]."""
    frames: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await reader.readexactly(8))
                frames.append((b0 & 0x0F, await reader.readexactly(n)))
                if b0 & 0x0F == 0x8:
                    break
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        pass
    return frames


def close_code_of(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 0x8 and len(payload) >= 2:
            return int(struct.unpack("!H", payload[:2])[0])
    return None


def make_runtime(model_dir: Path, hop_s: float, max_streams: int) -> Any:
    """The real pipeline on ``model_dir``, without VAD, one inference thread (not started)."""
    from emostream.models.modelfile import load_classifier
    from emostream.streamer.core.vad import VadConfig
    from emostream.streamer.runtime.config import RuntimeConfig
    from emostream.streamer.runtime.runtime import Runtime

    classifier = load_classifier(model_dir, threads=1)
    return Runtime(
        classifier, RuntimeConfig(hop_s=hop_s, vad=VadConfig(enabled=False), max_streams=max_streams)
    )
