"""Misbehaving clients of the soak (``benchmarks.soak``): each fault is one connection and its outcome.

An outcome is ``"<error code>/<close code>"`` as the server answered, or what the client saw:
``throttled``, ``lag``, ``released`` (a vanished client's stream id could be claimed again),
``closed`` (the server hung up on a subscriber that stopped reading), an HTTP status.
``EXPECTED`` holds, per fault, the reaction docs/protocol.md documents; ``unanswered`` lists the
outcomes that are not it, and the soak fails on any. ``run_bad`` picks faults at random until its
deadline and counts the outcomes per fault. The time-bound faults read the server's limits from
``FaultLimits`` (the soak starts its server with them).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from emostream.benchmarks.serverproc import ws_frame

START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
FRAME = np.zeros(800, "<i2").tobytes()  # 50 ms at 16 kHz
SLACK_S = 5.0  # how much later than its limit a time-bound reaction may come on a loaded machine
FILL_S = 5.0  # time the soak's estimates take to fill a deaf subscriber's buffers (>= 30 healthy streams)
TRAFFIC_FAULTS = ("slow_subscriber", "deaf_subscriber")  # need estimates flowing while they run
NEEDS_TRAFFIC_S = 45.0  # so they are not started in the run's last seconds
FAULT_TIMEOUT_S = 60.0  # one fault's connection(s), whatever happens


@dataclass(frozen=True, slots=True)
class FaultLimits:
    """The soak server's limits the time-bound faults depend on (passed as --limit-* options)."""

    idle_timeout_s: float = 10.0
    ping_interval_s: float = 10.0  # shorter made healthy clients of a loaded soak miss their pongs
    ping_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    queue_messages: int = 16
    write_buffer_bytes: int = 4096

    def server_args(self) -> list[str]:
        return ["--limit-idle-timeout-s", f"{self.idle_timeout_s:g}", "--limit-ping-interval-s",
                f"{self.ping_interval_s:g}", "--limit-ping-timeout-s", f"{self.ping_timeout_s:g}",
                "--limit-close-timeout-s", f"{self.close_timeout_s:g}",
                "--limit-queue-messages", str(self.queue_messages),
                "--limit-write-buffer-bytes", str(self.write_buffer_bytes)]


# the documented reaction per fault (docs/protocol.md: error codes, close codes, slow readers)
EXPECTED: dict[str, str] = {
    "malformed_json": "bad_json/1008",
    "audio_before_start": "no_start/1008",
    "unknown_encoding": "bad_encoding/1003",
    "zero_rate": "bad_sample_rate/1008",
    "negative_rate": "bad_sample_rate/1008",
    "absurd_rate": "bad_sample_rate/1008",
    "too_many_channels": "bad_channels/1003",
    "odd_frame_length": "bad_frame_length/1008",
    "nan": "bad_samples/1008",
    "oversized_frame": "too_big/1009",
    "text_for_audio": "unexpected_text/1003",
    "second_start": "duplicate_start/1008",
    "too_fast": "throttled/1000",
    "vanish_mid_frame": "released/-",
    "stall": "idle_timeout/1008",
    "unknown_path": "http_404/-",
    "slow_subscriber": "lag/-",
    "deaf_subscriber": "closed/-",
}


def unanswered(outcomes: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Per fault, the outcomes (and counts) other than its documented reaction; {} when all were answered."""
    bad: dict[str, dict[str, int]] = {}
    for fault, counts in outcomes.items():
        wrong = {o: n for o, n in counts.items() if n and o != EXPECTED.get(fault)}
        if wrong:
            bad[fault] = wrong
    return bad


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


async def fault_fast(url: str, limits: FaultLimits) -> str:
    """12 s of audio at once: beyond the default burst (5 s), so throttled (reported), not fatal."""
    throttled = 0
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps(START))
        await ws.recv()
        for _ in range(240):
            await ws.send(FRAME)
        await ws.send(json.dumps({"type": "stop"}))
        async with asyncio.timeout(10):
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "end":
                    throttled = int(msg["throttled_frames"])
        return f"{'throttled' if throttled else 'not_throttled'}/{ws.close_code}"


async def fault_vanish_mid_frame(url: str, limits: FaultLimits) -> str:
    """A binary frame header announcing 4000 bytes, 100 of them, then the TCP connection is gone; the
    stream must be released: its id is claimed again (``ready``) within ``SLACK_S`` seconds."""
    stream_id = f"vanish-{uuid.uuid4().hex[:12]}"
    start = json.dumps({**START, "stream": stream_id})
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(start)
        await ws.recv()
        transport = ws.transport
        transport.write(ws_frame(os.urandom(100), declared_len=4000, mask=os.urandom(4)))
        transport.abort()
    deadline = time.monotonic() + SLACK_S
    last = "none"
    while time.monotonic() < deadline:
        async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
            await ws.send(start)
            msg = json.loads(await ws.recv())
            if msg.get("type") == "ready":
                await ws.send(json.dumps({"type": "stop"}))
                return "released/-"
            last = msg.get("code", "none")
        await asyncio.sleep(0.2)
    return f"not_released:{last}/-"


async def fault_stall(url: str, limits: FaultLimits) -> str:
    """Starts, sends a little, goes silent: the server must send ``idle_timeout`` and close 1008 after
    ``idle_timeout_s`` (within ``SLACK_S`` more)."""
    code = "none"
    async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
        await ws.send(json.dumps(START))
        await ws.recv()
        await ws.send(FRAME)
        silent_since = time.monotonic()
        try:
            async with asyncio.timeout(limits.idle_timeout_s + SLACK_S):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "error":
                        code = msg["code"]
        except TimeoutError:
            return f"not_closed_in_{limits.idle_timeout_s + SLACK_S:g}s/-"
        except ConnectionClosed:
            pass
        if time.monotonic() - silent_since < limits.idle_timeout_s * 0.9:
            return f"{code}_too_early/{ws.close_code}"
        return f"{code}/{ws.close_code}"


async def fault_unknown_path(url: str, limits: FaultLimits) -> str:
    try:
        async with connect(url + "/nope", open_timeout=30):
            return "accepted/-"
    except InvalidStatus as exc:
        return f"http_{exc.response.status_code}/-"


def _small_receive_socket(url: str) -> socket.socket:
    """A TCP socket to the server with a 4 KiB receive buffer, so a reader that pauses backs the server up soon."""
    u = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((u.hostname or "127.0.0.1", u.port or 80))
    sock.setblocking(False)
    return sock


async def fault_slow_subscriber(url: str, limits: FaultLimits) -> str:
    """Subscribes, reads nothing for ``ping_interval_s + ping_timeout_s - 1`` seconds (its first pong is
    still in time; at 30 or more healthy streams their estimates fill its queue and buffers meanwhile),
    then reads: after what was queued must come a ``lag`` message, within ``SLACK_S``."""
    async with connect(url + "/feed", max_queue=2, open_timeout=30, sock=_small_receive_socket(url)) as ws:
        await asyncio.sleep(limits.ping_interval_s + limits.ping_timeout_s - 1.0)
        try:
            async with asyncio.timeout(SLACK_S):
                while True:
                    if json.loads(await ws.recv()).get("type") == "lag":
                        return "lag/-"
        except TimeoutError:
            return "no_lag/-"
        except ConnectionClosed:
            return f"no_lag/{ws.close_code}"


async def fault_deaf_subscriber(url: str, limits: FaultLimits) -> str:
    """Subscribes and never reads: once its buffers are full (``FILL_S``) no message can be sent to it,
    and the server must close it within ``ping_interval_s + ping_timeout_s + close_timeout_s`` (its
    close frame may be stuck behind what the client never read, hence the close timeout); the
    client looks ``SLACK_S`` later and must find the connection closed."""
    ws = await connect(url + "/feed", max_queue=1, open_timeout=30, sock=_small_receive_socket(url))
    try:
        limit_s = limits.ping_interval_s + limits.ping_timeout_s + limits.close_timeout_s
        await asyncio.sleep(FILL_S + limit_s + SLACK_S)
        try:
            async with asyncio.timeout(SLACK_S):
                while True:
                    await ws.recv()  # what was queued before the close, then ConnectionClosed
        except ConnectionClosed:
            return "closed/-"
        except TimeoutError:
            return "not_closed/-"
    finally:
        ws.transport.abort()


def _faults(limits: FaultLimits) -> dict[str, Any]:
    s = json.dumps

    def send(*messages: str | bytes) -> Any:
        return lambda u, _: _send_and_read(u, *messages)

    return {
        "malformed_json": send('{"type":"start",'),
        "audio_before_start": send(FRAME),
        "unknown_encoding": send(s({**START, "encoding": "opus"})),
        "zero_rate": send(s({**START, "sample_rate": 0})),
        "negative_rate": send(s({**START, "sample_rate": -1})),
        "absurd_rate": send(s({**START, "sample_rate": 10**12})),
        "too_many_channels": send(s({**START, "channels": 64})),
        "odd_frame_length": send(s(START), FRAME + b"\x00"),
        "nan": send(s({**START, "encoding": "f32le"}), np.array([0, np.nan], "<f4").tobytes()),
        "oversized_frame": send(s(START), bytes(1_500_000)),
        "text_for_audio": send(s(START), FRAME, "hello"),
        "second_start": send(s(START), FRAME, s(START)),
        "too_fast": fault_fast,
        "vanish_mid_frame": fault_vanish_mid_frame,
        "stall": fault_stall,
        "unknown_path": fault_unknown_path,
        "slow_subscriber": fault_slow_subscriber,
        "deaf_subscriber": fault_deaf_subscriber,
    }


async def run_bad(
    url: str, deadline: float, seed: int, outcomes: dict[str, Counter[str]], start_spread_s: float = 2.0,
    limits: FaultLimits | None = None,
) -> None:
    """Misbehave until ``deadline``: a random fault, its outcome counted, a pause, the next one."""
    rng = random.Random(seed)
    limits = limits or FaultLimits()
    faults = _faults(limits)
    assert set(faults) == set(EXPECTED)
    await asyncio.sleep(rng.uniform(0, start_spread_s))
    while time.monotonic() < deadline - 4.0:
        # the subscriber faults need the healthy streams' estimates flowing for their whole length
        late = deadline - time.monotonic() < NEEDS_TRAFFIC_S
        name = rng.choice(sorted(f for f in faults if not (late and f in TRAFFIC_FAULTS)))
        try:
            async with asyncio.timeout(FAULT_TIMEOUT_S):
                outcome = await faults[name](url, limits)
        except (OSError, WebSocketException, TimeoutError) as exc:
            outcome = f"client:{type(exc).__name__}"
        outcomes.setdefault(name, Counter())[outcome] += 1
        await asyncio.sleep(rng.uniform(0.2, 1.0))
