"""End-to-end load over WebSocket: a server subprocess on loopback, real-time clients, latency and losses.

``ServerProcess`` starts ``emostream serve`` (or the baseline server) on a free loopback port and
measures its CPU time. ``run_load`` feeds it N concurrent real-time streams from one or more client
processes (``python -m benchmarks.e2e client ...``, an asyncio load generator: pre-encoded 16-bit
frames of the demo clip, one sender task ticking through every stream's due frames, one receiver per
connection) and returns a ``LoadResult``: the server's ``latency_ms`` of every estimate (last sample of
the window in -> estimate out, measured by the server), the same measured by the client (send of the
frame holding the window's last sample -> receipt of its estimate), missing estimates, dropped
audio, and the CPU used by the server, the clients and everything else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import percentiles_ms

SAMPLE_RATE_HZ = 16000
DEMO_CLIP = Path(__file__).resolve().parent.parent / "streamer" / "assets" / "demo.flac"
LISTENING = re.compile(r"listening on (ws://\S+?:\d+)")
FAILURE_KINDS = ("throttled", "lag", "window_error", "error")


# ----------------------------------------------------------------------------- server process


class ServerProcess:
    """A server subprocess that prints ``... listening on ws://HOST:PORT`` to stderr once it listens."""

    def __init__(self, command: list[str], name: str, start_timeout_s: float = 120.0,
                 env: dict[str, str] | None = None) -> None:
        self.command = command
        self.env = dict(env or {})
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: deque[str] = deque(maxlen=60)
        self._listening = threading.Event()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            m = LISTENING.search(line)
            if m and not self._listening.is_set():
                self.url = m.group(1)
                self._listening.set()

    def start(self) -> ServerProcess:
        self._listening = threading.Event()
        self.url = ""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env=env)
        threading.Thread(target=self._drain, name=f"{self.name}-stderr", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._listening.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log)
                self.stop()
                raise RuntimeError(f"{self.name} did not start ({' '.join(self.command)}):\n{tail}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far (all its threads)."""
        import psutil

        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def wait_idle(self, below_cores: float = 0.1, timeout_s: float = 30.0) -> float:
        """Wait until the server's CPU use over 0.5 s falls below ``below_cores``; returns the wait."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s and self.alive():
            c0 = self.cpu_s()
            time.sleep(0.5)
            if (self.cpu_s() - c0) / 0.5 < below_cores:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: emostream serve closes with 1001 and exits 0
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CpuSampler:
    """Samples the server's CPU seconds and the whole machine's busy CPU seconds every ``period_s``."""

    def __init__(self, server: ServerProcess, period_s: float = 0.1) -> None:
        self.server = server
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), server cpu s, machine busy s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @staticmethod
    def _machine_busy_s() -> float:
        import psutil

        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self.server.cpu_s(), self._machine_busy_s()))
            except Exception:  # the server exited: keep the samples so far
                return
            self._stop.wait(self.period_s)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def rates(self, t_a: float, t_b: float) -> tuple[float, float]:
        """(server cores, machine cores) used on average between the samples nearest ``t_a`` and ``t_b``."""
        inside = [x for x in self.samples if t_a <= x[0] <= t_b]
        if len(inside) < 2:
            inside = self.samples[:1] + self.samples[-1:] if len(self.samples) >= 2 else []
        if len(inside) < 2:
            return 0.0, 0.0
        (ta, sa, ma), (tb, sb, mb) = inside[0], inside[-1]
        dt = max(tb - ta, 1e-9)
        return (sb - sa) / dt, (mb - ma) / dt


def ours_command(model: Path, hop_s: float, *, vad: str = "none", backend: str = "auto",
                 device: str = "cpu", max_streams: int = 4096, extra: Sequence[str] = ()) -> list[str]:
    """``emostream serve`` on a free loopback port, limits opened wide enough for the capacity search."""
    cmd = [sys.executable, "-m", "models.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--model", str(model), "--hop-s", str(hop_s), "--backend", backend, "--device", device,
           "--limit-max-streams", str(max_streams), "--limit-max-connections", str(max_streams + 64),
           "--limit-idle-timeout-s", "300"]
    cmd += ["--no-vad"] if vad == "none" else ["--vad", vad]
    return cmd + list(extra)


def baseline_command(model: Path, hop_s: float, device: str = "cpu") -> list[str]:
    return [sys.executable, "-m", "benchmarks.baseline", "--host", "127.0.0.1", "--port", "0",
            "--model", str(model), "--hop-s", str(hop_s), "--device", device]


# ----------------------------------------------------------------------------- load result


@dataclass
class LoadResult:
    """One load run: N streams for ``duration_s`` each, as every client saw them, plus CPU use."""

    n_streams: int
    duration_s: float
    frame_ms: float
    hop_s: float
    client_procs: int
    ramp_s: float
    server_latency_ms: list[float] = field(default_factory=list)
    client_latency_ms: list[float] = field(default_factory=list)
    expected_estimates: int = 0
    received_estimates: int = 0
    max_dropped_samples: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # message kind or error -> count
    streams_failed: int = 0
    send_lateness_p99_ms: float = 0.0
    send_lateness_max_ms: float = 0.0
    server_cpu_cores: float = 0.0
    client_cpu_cores: float = 0.0  # all load-generator processes together
    client_proc_cpu_cores: list[float] = field(default_factory=list)  # each one (1.0: it saturated a core)
    machine_cpu_cores: float = 0.0  # everything, all processes, over the same interval
    late_start_s: float = 0.0  # how much later than planned the slowest client process began
    cores: int = 1

    @property
    def missing_estimates(self) -> int:
        return max(0, self.expected_estimates - self.received_estimates)

    def latency(self) -> dict[str, float]:
        s = percentiles_ms([x / 1e3 for x in self.server_latency_ms])
        c = percentiles_ms([x / 1e3 for x in self.client_latency_ms])
        return {"server_p50_ms": s["p50_ms"], "server_p99_ms": s["p99_ms"], "server_max_ms": s["max_ms"],
                "client_p50_ms": c["p50_ms"], "client_p99_ms": c["p99_ms"], "client_max_ms": c["max_ms"]}

    def p99_ms(self) -> float:
        """The worse of the server's and the client's p99: what the capacity criterion holds to."""
        lat = self.latency()
        return max(lat["server_p99_ms"], lat["client_p99_ms"])

    def problems(self, max_p99_ms: float) -> list[str]:
        """Why this run does not count as keeping up ([] when it does)."""
        out = []
        if self.received_estimates == 0:
            out.append("no estimates")
        elif self.p99_ms() > max_p99_ms:
            out.append(f"p99 {self.p99_ms():.0f} ms > {max_p99_ms:.0f} ms")
        if self.missing_estimates:
            out.append(f"{self.missing_estimates} of {self.expected_estimates} estimates missing")
        if self.max_dropped_samples:
            out.append(f"audio dropped ({self.max_dropped_samples} samples in one stream)")
        if self.streams_failed:
            out.append(f"{self.streams_failed} stream(s) failed")
        for kind, n in sorted(self.failures.items()):
            out.append(f"{n} x {kind}")
        return out

    def summary(self, max_p99_ms: float) -> dict[str, Any]:
        """Everything but the raw latency lists."""
        d = {k: v for k, v in asdict(self).items() if k not in ("server_latency_ms", "client_latency_ms")}
        d.update(self.latency())
        d["missing_estimates"] = self.missing_estimates
        d["client_saturated"] = any(c > 0.9 for c in self.client_proc_cpu_cores)
        d["problems"] = self.problems(max_p99_ms)
        d["ok"] = not d["problems"]
        return d


# ----------------------------------------------------------------------------- client process


def load_clip_frames(frame_samples: int) -> list[bytes]:
    """The demo clip (16 kHz mono int16) cut into ``frame_samples`` frames, each pre-encoded as pcm_s16le."""
    import soundfile as sf

    audio, rate = sf.read(str(DEMO_CLIP), dtype="int16", always_2d=False)
    if rate != SAMPLE_RATE_HZ or audio.ndim != 1:
        raise RuntimeError(f"{DEMO_CLIP} should be 16 kHz mono, found {rate} Hz, shape {audio.shape}")
    n = len(audio) // frame_samples
    pcm = np.ascontiguousarray(audio[: n * frame_samples], dtype="<i2")
    return [pcm[i * frame_samples : (i + 1) * frame_samples].tobytes() for i in range(n)]


def ws_frame(payload: bytes, text: bool = False) -> bytes:
    """One complete client-to-server WebSocket frame (FIN, binary or text), encoded once and reused.

    Clients must mask their frames (RFC 6455 5.3); the all-zero masking key is a valid key that leaves
    the payload as is, so the frame can be built once and written straight to the transport: the
    load generator then costs one ``transport.write`` per message instead of websockets' framing.
    """
    n = len(payload)
    head = bytes([0x81 if text else 0x82])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


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
    stop = ws_frame(b'{"type":"stop"}', text=True)
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e client",
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


def auto_client_procs(n_streams: int, streams_per_proc: int = 200) -> int:
    return max(1, math.ceil(n_streams / streams_per_proc))


def run_load(server: ServerProcess, n_streams: int, *, duration_s: float, hop_s: float = 1.0,
             frame_ms: float = 20.0, client_procs: int | None = None, prefix: str = "bench",
             max_p99_ms: float = 500.0, spread: bool = True, ramp_s: float = 0.0) -> LoadResult:
    """N real-time streams against a running server, from ``client_procs`` processes (auto: 1 per 200).

    Each stream sends ``duration_s`` of audio. Windows ending in its first ``ramp_s`` seconds (the start-up
    windows, padded and computed from scratch) count for missing estimates and dropped audio but are left
    out of the latency figures and of the CPU averages: those describe the steady state.
    """
    import psutil

    procs_n = client_procs or auto_client_procs(n_streams)
    procs_n = max(1, min(procs_n, n_streams))
    connect_s = 2.5 + 0.01 * n_streams  # to start every client process and open every connection
    start_at = time.time() + connect_s
    drain_s = 5.0 + 2 * max_p99_ms / 1e3
    clients = []
    per = [n_streams // procs_n + (1 if i < n_streams % procs_n else 0) for i in range(procs_n)]
    first = 0
    for n in per:
        cmd = [sys.executable, "-m", "benchmarks.e2e", "client", "--url", server.url + "/ingest",
               "--streams", str(n), "--first", str(first), "--total", str(n_streams), "--prefix", prefix,
               "--duration-s", str(duration_s), "--frame-ms", str(frame_ms), "--hop-s", str(hop_s),
               "--start-at", repr(start_at), "--spread", str(int(spread)), "--drain-s", str(drain_s),
               "--ramp-s", str(ramp_s)]
        clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        first += n
    sampler = CpuSampler(server).start()
    outs = []
    try:
        for c in clients:
            out, err = c.communicate(timeout=duration_s + drain_s + connect_s + 120)
            if c.returncode != 0:
                raise RuntimeError(f"load client failed (exit {c.returncode}):\n{err[-3000:]}")
            outs.append(json.loads(out))
    finally:
        sampler.stop()
    # CPU over the interval every client was streaming, after the ramp and the streams' staggered start
    t_a = max(o["t_start"] for o in outs) + min(ramp_s + hop_s, duration_s / 2)
    t_b = min(o["t_end"] for o in outs)
    cores = psutil.cpu_count() or 1
    res = LoadResult(n_streams=n_streams, duration_s=duration_s, frame_ms=frame_ms, hop_s=hop_s,
                     client_procs=procs_n, ramp_s=ramp_s, cores=cores)
    for o in outs:
        res.server_latency_ms += o["server_latency_ms"]
        res.client_latency_ms += o["client_latency_ms"]
        res.expected_estimates += o["expected_estimates"]
        res.received_estimates += o["received_estimates"]
        res.max_dropped_samples = max(res.max_dropped_samples, o["max_dropped_samples"])
        res.streams_failed += o["streams_failed"]
        for k, v in o["failures"].items():
            res.failures[k] = res.failures.get(k, 0) + v
        res.send_lateness_p99_ms = max(res.send_lateness_p99_ms, o["send_lateness_p99_ms"])
        res.send_lateness_max_ms = max(res.send_lateness_max_ms, o["send_lateness_max_ms"])
        res.client_proc_cpu_cores.append(o["cpu_s"] / max(o["wall_s"], 1e-9))
        res.client_cpu_cores += res.client_proc_cpu_cores[-1]
        res.late_start_s = max(res.late_start_s, o["late_start_s"])
    res.server_cpu_cores, res.machine_cpu_cores = sampler.rates(t_a, t_b)
    return res


def warm_up(server: ServerProcess, hop_s: float, n_streams: int = 4, duration_s: float = 3.0) -> None:
    """A few seconds of streams first, so the measured runs find the server's lazy set-up done."""
    run_load(server, n_streams, duration_s=duration_s, hop_s=hop_s, prefix="warmup", client_procs=1)


def single_stream(server: ServerProcess, *, duration_s: float, hop_s: float, frame_ms: float = 20.0,
                  max_p99_ms: float = 500.0, ramp_s: float = 0.0) -> LoadResult:
    """One real-time stream: the latency figures of item 3 (server-measured and client-measured)."""
    return run_load(server, 1, duration_s=duration_s, hop_s=hop_s, frame_ms=frame_ms, prefix="single",
                    client_procs=1, max_p99_ms=max_p99_ms, ramp_s=ramp_s)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2:]))
    print("usage: python -m benchmarks.e2e client --url ... (started by python -m benchmarks)", file=sys.stderr)
    sys.exit(2)
