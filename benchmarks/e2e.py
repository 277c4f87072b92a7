"""End-to-end load over WebSocket: a server subprocess on loopback, real-time clients, latency and losses.

``benchmarks.serverproc.ServerProcess`` runs ``emostream serve`` (``ours_command``) or the baseline
server (``baseline_command``) on a free loopback port and measures its CPU time. ``run_load`` feeds
it N concurrent real-time streams from one or more client processes (``python -m benchmarks.loadgen``,
an asyncio load generator: pre-encoded 16-bit frames of the demo clip, one sender task ticking
through every stream's due frames, one receiver per connection) and returns a ``LoadResult``: the server's ``latency_ms`` of every estimate (last sample of
the window in -> estimate out, measured by the server), the same measured by the client (send of the
frame holding the window's last sample -> receipt of its estimate), missing estimates, dropped
audio, and the CPU used by the server, the clients and everything else on the machine meanwhile.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emostream.benchmarks.machine import percentiles_ms
from emostream.benchmarks.serverproc import CpuSampler, ServerProcess, serve_command


def ours_command(model: Path, hop_s: float, *, vad: str = "none", backend: str = "auto",
                 device: str = "cpu", max_streams: int = 4096, extra: Sequence[str] = ()) -> list[str]:
    """``emostream serve`` on a free loopback port, limits opened wide enough for the capacity search."""
    cmd = serve_command("--model", str(model), "--hop-s", str(hop_s), "--backend", backend, "--device", device,
                        "--limit-max-streams", str(max_streams), "--limit-max-connections", str(max_streams + 64),
                        "--limit-idle-timeout-s", "300")
    cmd += ["--no-vad"] if vad == "none" else ["--vad", vad]
    return cmd + list(extra)


def baseline_command(model: Path, hop_s: float, device: str = "cpu") -> list[str]:
    return [sys.executable, "-m", "emostream.benchmarks.baseline", "--host", "127.0.0.1", "--port", "0",
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
        cmd = [sys.executable, "-m", "emostream.benchmarks.loadgen", "--url", server.url + "/ingest",
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
    """One real-time stream: its end-to-end latency, measured by the server and by the client."""
    return run_load(server, 1, duration_s=duration_s, hop_s=hop_s, frame_ms=frame_ms, prefix="single",
                    client_procs=1, max_p99_ms=max_p99_ms, ramp_s=ramp_s)
