"""Misbehaving clients of the soak (``benchmarks.soak``): each fault is one connection and its outcome.

An outcome is ``"<error code>/<close code>"`` as the server answered (or what the client saw:
throttled, lag, vanished, stalled, an HTTP status). ``run_bad`` picks faults at random until its
deadline and counts the outcomes per fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from emostream.benchmarks.serverproc import ws_frame

START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
FRAME = np.zeros(800, "<i2").tobytes()  # 50 ms at 16 kHz


async def _send_and_read(url: str, *messages: str | bytes, path: str = "/ingest", read_s: float = 5.0) -> str:
    """Send ``messages``; return "<error code>/<close code>" as the server answered."""
    code = "none"
    async with connect(url + path, compression=None, max_size=2**23, open_timeout=30) as ws:
        try:
            for m in messages:
                await ws.send(m)
            async with asyncio.timeout(read_s):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "error":
                        code = msg["code"]
        except (ConnectionClosed, TimeoutError):
            pass
        return f"{code}/{ws.close_code}"


async def fault_fast(url: str) -> str:
    """12 s of audio in about 0.4 s: beyond the default burst (5 s), so throttled (reported), not fatal."""
    throttled = 0
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps(START))
        await ws.recv()
        for _ in range(240):
            await ws.send(FRAME)
            await asyncio.sleep(0.0017)
        await ws.send(json.dumps({"type": "stop"}))
        async with asyncio.timeout(10):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "end":
                    throttled = int(msg["throttled_frames"])
        return f"{'throttled' if throttled else 'not_throttled'}/{ws.close_code}"


async def fault_vanish_mid_frame(url: str) -> str:
    """A binary frame header announcing 4000 bytes, 100 of them, then the TCP connection is gone."""
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps(START))
        await ws.recv()
        transport = ws.transport
        transport.write(ws_frame(os.urandom(100), declared_len=4000, mask=os.urandom(4)))
        transport.abort()
    return "vanished/-"


async def fault_stall(url: str) -> str:
    """Starts, sends a little, goes silent for 2 s, then drops the connection."""
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps(START))
        await ws.send(FRAME)
        await asyncio.sleep(2.0)
        ws.transport.abort()
    return "stalled/-"


async def fault_unknown_path(url: str) -> str:
    try:
        async with connect(url + "/nope", open_timeout=30):
            return "accepted/-"
    except InvalidStatus as exc:
        return f"http_{exc.response.status_code}/-"


async def fault_slow_subscriber(url: str) -> str:
    """Subscribes and does not read for 3 s, then reads what is there and leaves."""
    lag = 0
    async with connect(url + "/feed", max_queue=2, open_timeout=30) as ws:
        await asyncio.sleep(3.0)
        try:
            async with asyncio.timeout(1.0):
                async for raw in ws:
                    if json.loads(raw).get("type") == "lag":
                        lag += 1
        except TimeoutError:
            pass
    return f"{'lag' if lag else 'no_lag'}/-"


def _faults() -> dict[str, Any]:
    s = json.dumps
    return {
        "malformed_json": lambda u: _send_and_read(u, '{"type":"start",'),
        "audio_before_start": lambda u: _send_and_read(u, FRAME),
        "unknown_encoding": lambda u: _send_and_read(u, s({**START, "encoding": "opus"})),
        "zero_rate": lambda u: _send_and_read(u, s({**START, "sample_rate": 0})),
        "negative_rate": lambda u: _send_and_read(u, s({**START, "sample_rate": -1})),
        "absurd_rate": lambda u: _send_and_read(u, s({**START, "sample_rate": 10**12})),
        "too_many_channels": lambda u: _send_and_read(u, s({**START, "channels": 64})),
        "odd_frame_length": lambda u: _send_and_read(u, s(START), FRAME + b"\x00"),
        "nan": lambda u: _send_and_read(
            u, s({**START, "encoding": "f32le"}), np.array([0, np.nan], "<f4").tobytes()
        ),
        "oversized_frame": lambda u: _send_and_read(u, s(START), bytes(1_500_000)),
        "text_for_audio": lambda u: _send_and_read(u, s(START), FRAME, "hello"),
        "second_start": lambda u: _send_and_read(u, s(START), FRAME, s(START)),
        "too_fast": fault_fast,
        "vanish_mid_frame": fault_vanish_mid_frame,
        "stall": fault_stall,
        "unknown_path": fault_unknown_path,
        "slow_subscriber": fault_slow_subscriber,
    }


async def run_bad(
    url: str, deadline: float, seed: int, outcomes: dict[str, Counter[str]], start_spread_s: float = 2.0
) -> None:
    """Misbehave until ``deadline``: a random fault, its outcome counted, a pause, the next one."""
    rng = random.Random(seed)
    faults = _faults()
    await asyncio.sleep(rng.uniform(0, start_spread_s))
    while time.monotonic() < deadline - 4.0:
        name = rng.choice(sorted(faults))
        try:
            async with asyncio.timeout(20):
                outcome = await faults[name](url)
        except (OSError, WebSocketException, TimeoutError) as exc:
            outcome = f"client:{type(exc).__name__}"
        outcomes.setdefault(name, Counter())[outcome] += 1
        await asyncio.sleep(rng.uniform(0.2, 1.0))
