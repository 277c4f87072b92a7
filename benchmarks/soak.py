"""Soak test of `emostream serve`: many real-time streams plus misbehaving clients, on loopback.

    python -m benchmarks.soak --streams 100 --seconds 60 --json OUT.json [--bad-share 0.2] [--model default|PATH]

Starts one server subprocess on 127.0.0.1 (a free port), then, with asyncio in this process,
runs ``streams x (1 - bad_share)`` healthy clients that each send ``--seconds`` of synthetic audio
in real time (16 or 48 kHz, 20-100 ms frames) and stop, and ``streams x bad_share`` misbehaving
clients that for the same time pick faults at random from the list (malformed JSON, bad start
fields, bad frame lengths, NaN, oversized and too-fast audio, a second start, text for audio,
vanishing mid-frame, stalling, an unknown path, a subscriber that stops reading). Everything is
bounded in time and count.

Reports, for the healthy streams, estimates expected (one per hop plus the flushed tail) versus
received (the goal: none lost), server-side (``latency_ms``) and end-to-end latency percentiles
(p50/p99: from sending the audio that completes a window to receiving its estimate); errors by
kind (per fault, the error code and close code the server answered); and the server's resident
memory (psutil): at start, peak, end, and growth after the warm-up. Prints a summary table and
writes it all as JSON.

Exit status 1 (``soak_problems``) when a healthy stream lost an estimate or got an error, when a
fault was not answered with its documented reaction (``benchmarks.faults.EXPECTED``: e.g. a stall
longer than the idle timeout gets ``idle_timeout`` and close 1008, a subscriber that reads too
slowly gets ``lag``, one that stops reading is closed, a vanished client's stream id is free again
within seconds), or when the server did not exit cleanly. The server runs with short idle and ping
limits (``benchmarks.faults.FaultLimits``) so that those reactions come within the run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from emostream.benchmarks.faults import EXPECTED, FaultLimits, run_bad, unanswered
from emostream.benchmarks.machine import describe_machine
from emostream.benchmarks.serverproc import ServerProcess, serve_command
from emostream.models.windows import window_ends

RATES_HZ = (16000, 48000)
FRAME_MS = (20, 40, 60, 100)
START_SPREAD_S = 2.0  # healthy streams start at random times within this
GRACE_S = 30.0  # after the last audio, how long the run may take to finish
RSS_EVERY_S = 0.5
WARMUP_SHARE = 0.2  # memory growth is measured from this share of the run on


class RssSampler:
    """Samples the server's resident memory every RSS_EVERY_S on a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.proc.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(RSS_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self, t0: float, t_end: float) -> dict[str, float]:
        if not self.samples:
            return {}
        mib = 1 / 2**20
        rss = [r for _, r in self.samples]
        after_warmup = [r for t, r in self.samples if t >= t0 + WARMUP_SHARE * (t_end - t0)] or rss
        return {
            "start_mib": rss[0] * mib,
            "after_warmup_mib": after_warmup[0] * mib,
            "peak_mib": max(rss) * mib,
            "end_mib": rss[-1] * mib,
            "growth_after_warmup_mib": (rss[-1] - after_warmup[0]) * mib,
        }


# ---- healthy clients ------------------------------------------------------------------------------------


@dataclass
class Healthy:
    rate_hz: int
    frame_ms: int
    expected: int = 0
    received: int = 0
    end_estimates: int | None = None
    throttled_frames: int = 0
    lag_dropped: int = 0
    latency_ms: list[float] = field(default_factory=list)  # the server's latency_ms
    e2e_ms: list[float] = field(default_factory=list)  # send of the window's last frame -> estimate received
    behind_s: float = 0.0  # worst lag of this client's sender behind real time (the load generator's)
    error: str | None = None
    close_code: int | None = None


LOOP_S = 8.0  # each healthy client sends a loop of this much synthetic audio, over and over


def synth(n: int, rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a gliding voice-like tone in light noise, 16-bit."""
    t = np.arange(n) / rate_hz
    f_hz = rng.uniform(120, 250) + 50.0 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f_hz) / rate_hz) + 0.05 * rng.standard_normal(n)
    return (np.clip(x, -1, 1) * 32767).astype("<i2")


def whole_frames(seconds: float, rate_hz: int, model_rate_hz: int) -> int:
    """Input frames for ``seconds``, rounded to a length the resampler maps to a whole number of samples."""
    step = rate_hz // math.gcd(rate_hz, model_rate_hz)
    return max(step, round(seconds * rate_hz / step) * step)


async def run_healthy(url: str, h: Healthy, seconds: float, delay_s: float, seed: int) -> None:
    await asyncio.sleep(delay_s)
    rng = np.random.default_rng(seed)
    # a short loop, made before connecting and off the event loop: made between start and the first
    # frame (80 clients in one loop) it held the loop for seconds, past the server's short idle and
    # ping limits; made whole for a long run (48 kHz x 600 s: 3 s of CPU per client) it started the
    # last clients a minute late, past the run's deadline
    step = h.rate_hz * h.frame_ms // 1000
    loop_len = step * max(1, round(LOOP_S * h.rate_hz / step))  # whole frames: no frame wraps
    loop = await asyncio.to_thread(synth, loop_len, h.rate_hz, rng)
    try:
        async with connect(url + "/ingest", compression=None, open_timeout=30) as ws:
            start = {"type": "start", "sample_rate": h.rate_hz, "encoding": "pcm_s16le", "channels": 1}
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                h.error = ready.get("code", "no ready")
                return
            model_rate_hz, hop_s = int(ready["sample_rate_hz"]), float(ready["hop_s"])
            n = whole_frames(seconds, h.rate_hz, model_rate_hz)
            n_model = n * model_rate_hz // h.rate_hz
            h.expected = len(window_ends(n_model, round(hop_s * model_rate_hz)))
            # audio seconds sent so far and when, in step: looked up by bisection, since a linear scan
            # per estimate grows with the run (quadratic in the length of a soak)
            sent_audio_s: list[float] = []
            sent_mono: list[float] = []

            async def sender() -> None:
                t0 = time.monotonic()
                for i in range(0, n, step):
                    wait_s = i / h.rate_hz - (time.monotonic() - t0)
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)
                    else:
                        h.behind_s = max(h.behind_s, -wait_s)
                    at = i % loop_len
                    await ws.send(loop[at : at + min(step, n - i)].tobytes())
                    sent_audio_s.append(min(n, i + step) / h.rate_hz)
                    sent_mono.append(time.monotonic())
                await ws.send(json.dumps({"type": "stop"}))

            task = asyncio.create_task(sender())
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    kind = msg["type"]
                    if kind == "estimate":
                        h.received += 1
                        h.latency_ms.append(float(msg["latency_ms"]))
                        now = time.monotonic()
                        k = bisect.bisect_left(sent_audio_s, msg["t_end_s"] - 1e-6)
                        if k < len(sent_mono):
                            h.e2e_ms.append((now - sent_mono[k]) * 1e3)
                    elif kind == "end":
                        h.end_estimates = int(msg["estimates"])
                        h.throttled_frames = int(msg["throttled_frames"])
                    elif kind == "lag":
                        h.lag_dropped += int(msg["dropped"])
                    elif kind == "error":
                        h.error = msg["code"]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            h.close_code = ws.close_code
    except (OSError, WebSocketException, TimeoutError) as exc:
        h.error = h.error or type(exc).__name__
    except Exception as exc:  # a bug in this client: count it, do not hide it
        h.error = h.error or f"client bug: {exc!r}"


# ---- the run --------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def soak(
    url: str, streams: int, seconds: float, bad_share: float, seed: int, limits: FaultLimits | None = None
) -> dict[str, Any]:
    n_bad = round(streams * bad_share)
    n_healthy = streams - n_bad
    rng = random.Random(seed)
    healthy = [Healthy(RATES_HZ[i % len(RATES_HZ)], rng.choice(FRAME_MS)) for i in range(n_healthy)]
    outcomes: dict[str, Counter[str]] = {}
    t0 = time.monotonic()
    deadline = t0 + START_SPREAD_S + seconds
    tasks = [
        asyncio.create_task(run_healthy(url, h, seconds, rng.uniform(0, START_SPREAD_S), seed + i))
        for i, h in enumerate(healthy)
    ]
    tasks += [
        asyncio.create_task(run_bad(url, deadline, seed + 10_000 + i, outcomes, START_SPREAD_S, limits))
        for i in range(n_bad)
    ]
    _, pending = await asyncio.wait(tasks, timeout=START_SPREAD_S + seconds + GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall_s = time.monotonic() - t0

    latency = [x for h in healthy for x in h.latency_ms]
    e2e = [x for h in healthy for x in h.e2e_ms]
    errors: Counter[str] = Counter()
    for per_fault in outcomes.values():
        for outcome, n in per_fault.items():
            errors[outcome.split("/")[0]] += n
    return {
        "healthy_streams": n_healthy,
        "bad_clients": n_bad,
        "wall_s": wall_s,
        "unfinished_tasks": len(pending),
        "estimates_expected": sum(h.expected for h in healthy),
        "estimates_received": sum(h.received for h in healthy),
        "streams_complete": sum(h.expected > 0 and h.received == h.expected for h in healthy),
        "healthy_errors": dict(Counter(h.error for h in healthy if h.error)),
        "healthy_close_codes": dict(Counter(str(h.close_code) for h in healthy)),
        "healthy_lag_dropped": sum(h.lag_dropped for h in healthy),
        "healthy_throttled_frames": sum(h.throttled_frames for h in healthy),
        "latency_ms": {
            "p50": _pct(latency, 50),
            "p99": _pct(latency, 99),
            "max": max(latency, default=math.nan),
        },
        "e2e_latency_ms": {"p50": _pct(e2e, 50), "p99": _pct(e2e, 99), "max": max(e2e, default=math.nan)},
        "load_generator_behind_s_max": max((h.behind_s for h in healthy), default=0.0),
        "faults": {name: dict(c) for name, c in sorted(outcomes.items())},
        "faults_expected": dict(EXPECTED),
        "faults_unanswered": unanswered(outcomes),
        "errors_by_kind": dict(sorted(errors.items())),
    }


def soak_problems(r: dict[str, Any]) -> list[str]:
    """Why a soak result fails ([] when it passes): lost estimates, healthy errors, unanswered faults, exit code."""
    problems = []
    lost = r["estimates_expected"] - r["estimates_received"]
    if lost:
        problems.append(f"{lost} of {r['estimates_expected']} estimates of the healthy streams lost")
    if r["streams_complete"] != r["healthy_streams"]:
        problems.append(f"{r['healthy_streams'] - r['streams_complete']} healthy stream(s) incomplete")
    if r["healthy_errors"]:
        problems.append(f"healthy streams got errors: {r['healthy_errors']}")
    if r.get("unfinished_tasks"):
        problems.append(f"{r['unfinished_tasks']} client task(s) did not finish in time")
    for fault, wrong in r["faults_unanswered"].items():
        problems.append(f"fault {fault}: expected {EXPECTED.get(fault, '?')}, got {wrong}")
    if r["bad_clients"] and not r["faults"]:
        problems.append("no fault was tried")
    if r["server_exit_code"] != 0:
        problems.append(f"server exit code {r['server_exit_code']}")
    return problems


def print_summary(r: dict[str, Any]) -> None:
    lost = r["estimates_expected"] - r["estimates_received"]
    rows = [
        ("healthy streams / bad clients", f"{r['healthy_streams']} / {r['bad_clients']}"),
        ("seconds of audio per stream", f"{r['seconds']:g}"),
        (
            "estimates expected / received",
            f"{r['estimates_expected']} / {r['estimates_received']} (lost {lost})",
        ),
        ("streams complete", f"{r['streams_complete']} / {r['healthy_streams']}"),
        ("healthy errors", json.dumps(r["healthy_errors"]) if r["healthy_errors"] else "none"),
        ("healthy close codes", json.dumps(r["healthy_close_codes"])),
        ("latency_ms p50 / p99 (server)", f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f}"),
        ("end-to-end ms p50 / p99", f"{r['e2e_latency_ms']['p50']:.1f} / {r['e2e_latency_ms']['p99']:.1f}"),
        ("load generator behind real time, max s", f"{r['load_generator_behind_s_max']:.2f}"),
        (
            "server RSS start / peak / end MiB",
            "{start_mib:.0f} / {peak_mib:.0f} / {end_mib:.0f}".format(**r["rss"]),
        ),
        ("RSS growth after warm-up MiB", f"{r['rss']['growth_after_warmup_mib']:+.1f}"),
        ("server exit code", str(r["server_exit_code"])),
        ("wall time s", f"{r['wall_s']:.1f}"),
        ("machine", "{cpu_model}, {logical_cores} cores, {memory_gib} GiB".format(**r["machine"])),
        (
            "load average (1, 5 min) before / after",
            f"{r['machine_load_before']} / {[r['machine']['load_1min'], r['machine']['load_5min']]}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nsoak summary")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("\n  fault outcomes (error code / close code: count; the documented reaction in brackets)")
    for name, outcomes in r["faults"].items():
        mark = "" if name not in r["faults_unanswered"] else "   <- NOT AS DOCUMENTED"
        print(f"    {name:<20} " + ", ".join(f"{o}: {n}" for o, n in sorted(outcomes.items()))
              + f"  [{EXPECTED.get(name, '?')}]{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python -m benchmarks.soak --streams 100 --seconds 60 --json soak.json --bad-share 0.2",
    )
    parser.add_argument(
        "--streams", type=int, default=100, help="clients in all, healthy and bad (default 100)"
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="audio seconds per healthy stream (default 60)"
    )
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument(
        "--bad-share", type=float, default=0.2, help="share of misbehaving clients (default 0.2)"
    )
    parser.add_argument("--model", default="default", help="model for the server: 'default' or a path")
    parser.add_argument("--hop-s", type=float, default=None, help="server hop (default: the server's)")
    parser.add_argument("--no-vad", action="store_true", help="run the server without VAD")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.streams < 1 or args.seconds <= 0 or not 0.0 <= args.bad_share <= 1.0:
        parser.error("need --streams >= 1, --seconds > 0 and 0 <= --bad-share <= 1")

    limits = FaultLimits()
    server_args = ["--model", args.model, "--limit-max-streams", str(args.streams + 16)]
    server_args += ["--limit-max-connections", str(2 * args.streams + 64), *limits.server_args()]
    if args.hop_s is not None:
        server_args += ["--hop-s", str(args.hop_s)]
    if args.no_vad:
        server_args.append("--no-vad")
    machine_before = describe_machine()
    try:
        server = ServerProcess(serve_command(*server_args), "emostream serve").start()
    except RuntimeError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    assert server.proc is not None
    sampler = RssSampler(server.proc.pid)
    t0 = time.monotonic()
    try:
        result = asyncio.run(soak(server.url, args.streams, args.seconds, args.bad_share, args.seed, limits))
    finally:
        t_end = time.monotonic()
        sampler.stop()
        exit_code = server.stop()
    result.update(
        seconds=args.seconds,
        bad_share=args.bad_share,
        model=args.model,
        server_args=server_args,
        rss=sampler.summary(t0, t_end),
        server_exit_code=exit_code,
        machine=describe_machine().to_dict(),  # its load average: other work on the machine skews latency
        machine_load_before=[machine_before.load_1min, machine_before.load_5min],
        command=" ".join(["python -m benchmarks.soak", *(argv if argv is not None else sys.argv[1:])]),
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    print_summary(result)
    print(f"\nwrote {args.json}")
    problems = soak_problems(result)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print("PASS: every estimate arrived and every fault got its documented reaction")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
