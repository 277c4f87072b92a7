"""The load generator: one client process of ``benchmarks.e2e.run_load`` (``python -m benchmarks.loadgen``).

Opens its share of the streams to ``--url`` (/ingest), sends pre-encoded 16-bit frames of the demo
clip in real time (one sender task ticking through every stream's due frames, one receiver per
connection) and prints, as one JSON object, every estimate's server- and client-measured latency,
missing estimates, dropped audio, failures and its own CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emostream.benchmarks.serverproc import ws_frame

SAMPLE_RATE_HZ = 16000
DEMO_CLIP = Path(__file__).resolve().parent.parent / "streamer" / "assets" / "demo.flac"
FAILURE_KINDS = ("throttled", "lag", "window_error", "error")


def load_clip_frames(frame_samples: int) -> list[bytes]:
    """The demo clip (16 kHz mono int16) cut into ``frame_samples`` frames, each pre-encoded as pcm_s16le."""
    import soundfile as sf

    audio, rate = sf.read(str(DEMO_CLIP), dtype="int16", always_2d=False)
    if rate != SAMPLE_RATE_HZ or audio.ndim != 1:
        raise RuntimeError(f"{DEMO_CLIP} should be 16 kHz mono, found {rate} Hz, shape {audio.shape}")
    n = len(audio) // frame_samples
    pcm = np.ascontiguousarray(audio[: n * frame_samples], dtype="<i2")
    return [pcm[i * frame_samples : (i + 1) * frame_samples].tobytes() for i in range(n)]


@dataclass
class _Conn:
    index: int
    stream_id: str
    ws: Any = None
    t0: float = 0.0  # perf_counter when its first frame's audio starts
    next_frame: int = 0
    send_times: list[float] = field(default_factory=list)
    server_latency_ms: list[float] = field(default_factory=list)
    client_latency_ms: list[float] = field(default_factory=list)
    seqs: set[int] = field(default_factory=set)
    max_dropped: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    error: str = ""


async def _receive(conn: _Conn, frame_samples: int, ramp_s: float) -> None:
    try:
        async for raw in conn.ws:
            now = time.perf_counter()
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "estimate":
                conn.seqs.add(int(msg["seq"]))
                conn.max_dropped = max(conn.max_dropped, int(msg.get("dropped_samples", 0)))
                t_end_s = float(msg["t_end_s"])
                if t_end_s <= ramp_s:  # the stream's ramp: counted (missing, dropped), not timed
                    continue
                conn.server_latency_ms.append(float(msg["latency_ms"]))
                last_frame = (round(t_end_s * SAMPLE_RATE_HZ) - 1) // frame_samples
                if 0 <= last_frame < len(conn.send_times):
                    conn.client_latency_ms.append((now - conn.send_times[last_frame]) * 1e3)
            elif kind == "end":
                conn.ended = True
            elif kind in FAILURE_KINDS:
                key = f"{kind}:{msg.get('code', '')}".rstrip(":")
                conn.failures[key] = conn.failures.get(key, 0) + 1
    except Exception as exc:  # connection lost: counted as a failed stream
        conn.error = f"{type(exc).__name__}: {exc}"


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    frame_samples = round(args.frame_ms * SAMPLE_RATE_HZ / 1000)
    frame_s = frame_samples / SAMPLE_RATE_HZ
    frames = [ws_frame(f) for f in load_clip_frames(frame_samples)]
    n_send = round(args.duration_s / frame_s)
    conns = [_Conn(i, f"{args.prefix}-{i}") for i in range(args.first, args.first + args.streams)]
    start = {"type": "start", "sample_rate": SAMPLE_RATE_HZ, "encoding": "pcm_s16le", "channels": 1}
    sem = asyncio.Semaphore(32)
    receivers: list[asyncio.Task[None]] = []

    async def open_one(c: _Conn) -> None:
        async with sem:
            try:
                c.ws = await connect(args.url, compression=None, max_size=None, open_timeout=60,
                                     ping_interval=None, close_timeout=10)
                await c.ws.send(json.dumps({**start, "stream": c.stream_id}))
                ready = json.loads(await asyncio.wait_for(c.ws.recv(), 60))
                if ready.get("type") != "ready":
                    raise RuntimeError(f"expected ready, got {ready}")
            except Exception as exc:
                c.error = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(open_one(c) for c in conns))
    live = [c for c in conns if not c.error]
    for c in live:
        receivers.append(asyncio.create_task(_receive(c, frame_samples, args.ramp_s)))
    # stream i starts its first frame at start_at + i/total of one hop: windows fall due spread over the hop
    offset = time.time() - time.perf_counter()
    t_start = args.start_at - offset
    late_start_s = max(0.0, time.perf_counter() - t_start)
    t_start += late_start_s  # connecting took longer than planned: start now rather than catch up in a burst
    for c in live:
        c.t0 = t_start + (c.index / args.total) * args.hop_s if args.spread else t_start
        c.send_times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    lateness: list[float] = []
    # frame k of a stream is sent once its audio exists, at t0 + (k + 1) * frame_s: a heap of due times
    due = [(c.t0 + frame_s, c.index, c) for c in live]
    heapq.heapify(due)
    stop = ws_frame(b'{"type":"stop"}', opcode=0x1)
    while due:
        # wake at most every TICK_S and send everything due: hundreds of streams cost a few wake-ups
        # per frame period instead of one per frame (a frame goes out up to TICK_S late, measured)
        wait = due[0][0] - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(max(wait, args.tick_ms / 1e3))
        now = time.perf_counter()
        while due and due[0][0] <= now:
            t_due, _, c = heapq.heappop(due)
            try:
                write = c.ws.transport.write
                write(frames[(c.index * 137 + c.next_frame) % len(frames)])
                sent = time.perf_counter()
                c.send_times.append(sent)
                lateness.append(sent - t_due)
                c.next_frame += 1
                if c.next_frame < n_send:
                    heapq.heappush(due, (c.t0 + (c.next_frame + 1) * frame_s, c.index, c))
                else:
                    write(stop)
            except Exception as exc:
                c.error = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0)  # let the receivers run between bursts
    cpu1, wall1 = time.process_time(), time.perf_counter()
    # after stop: the final estimates and `end`, then the server closes
    done, _ = await asyncio.wait(receivers, timeout=args.drain_s) if receivers else (set(), set())
    for task in receivers:
        task.cancel()
    for c in live:
        if c.ws is not None:
            try:
                await asyncio.wait_for(c.ws.close(), 2)
            except Exception:
                pass
    hop_samples = round(args.hop_s * SAMPLE_RATE_HZ)
    n_samples = n_send * frame_samples
    expected = n_samples // hop_samples + (1 if n_samples % hop_samples else 0)
    failures: dict[str, int] = {}
    for c in conns:
        for k, v in c.failures.items():
            failures[k] = failures.get(k, 0) + v
        if c.error:
            failures[f"connection: {c.error[:80]}"] = failures.get(f"connection: {c.error[:80]}", 0) + 1
        elif not c.ended:
            failures["no end message"] = failures.get("no end message", 0) + 1
    lat = np.asarray(lateness) * 1e3 if lateness else np.zeros(1)
    return {
        "streams": len(conns),
        "server_latency_ms": [x for c in conns for x in c.server_latency_ms],
        "client_latency_ms": [x for c in conns for x in c.client_latency_ms],
        "expected_estimates": expected * len(conns),
        "received_estimates": sum(len(c.seqs) for c in conns),
        "max_dropped_samples": max((c.max_dropped for c in conns), default=0),
        "failures": failures,
        "streams_failed": sum(1 for c in conns if c.error),
        "send_lateness_p99_ms": float(np.percentile(lat, 99)),
        "send_lateness_max_ms": float(lat.max()),
        "late_start_s": late_start_s,
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0,
        "t_start": t_start + offset,  # time.time() of the first frame and after the last
        "t_end": wall1 + offset,
    }


def client_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen",
                                description="One load-generator process (started by run_load); prints JSON.")
    p.add_argument("--url", required=True)
    p.add_argument("--streams", type=int, required=True, help="streams in this process")
    p.add_argument("--first", type=int, default=0, help="index of this process's first stream")
    p.add_argument("--total", type=int, required=True, help="streams over all client processes")
    p.add_argument("--prefix", default="bench")
    p.add_argument("--duration-s", type=float, required=True)
    p.add_argument("--frame-ms", type=float, default=20.0)
    p.add_argument("--hop-s", type=float, default=1.0)
    p.add_argument("--start-at", type=float, required=True, help="time.time() when streaming starts")
    p.add_argument("--spread", type=int, default=1, help="1: stagger stream starts over one hop")
    p.add_argument("--drain-s", type=float, default=10.0)
    p.add_argument("--ramp-s", type=float, default=0.0,
                   help="leave windows ending in a stream's first RAMP_S seconds out of the latency figures")
    p.add_argument("--tick-ms", type=float, default=5.0, help="the sender wakes at most this often")
    args = p.parse_args(argv)
    out = asyncio.run(_client(args))
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    return 0


# ----------------------------------------------------------------------------- orchestration


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
