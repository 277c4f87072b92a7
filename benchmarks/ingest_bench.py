"""The ``ingest`` stage: server CPU per WebSocket message and per window, and where a message's time goes.

Two measurements, both with the real code:

- **server**: N real-time streams into a running ``emostream serve`` (``--no-vad``) at 20-ms and at
  100-ms frames, the server's CPU over the steady part of each run (``benchmarks.e2e.run_load``).
  Both runs carry the same windows per second and 5x different messages per second, so
  ``cpu = per_message * messages + per_window * windows`` solved over the two runs gives the server's
  CPU per message and per window (everything: event loop, websockets, ingest, runtime, model).
- **pieces**: the steps of one 20-ms message (640 bytes of 16-bit mono) and of one window's
  publication, each timed alone in this process on the calling thread's CPU clock: websockets'
  frame parsing (``ServerProtocol.receive_data``), ``audio_frames`` (wire bytes -> samples),
  ``TokenBucket.take`` (rate limit), ``StreamHandle.push`` (to float, ring, windower; a window
  due every 50 pushes is queued for the runtime's worker), and ``AudioIntake.feed``, what the
  server runs per message: those three, with 16-bit audio held as bytes and pushed once per window;
  and per window ``Smoother.update`` plus
  building the ``Estimate`` and its ``to_json``. What the server spends per message beyond the sum
  of the pieces is the event loop, the transport and the ``recv``/``send`` machinery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emostream.benchmarks.e2e import run_load
from emostream.benchmarks.serverproc import ServerProcess, ws_frame

SAMPLE_RATE_HZ = 16000
FRAME_MS = (20.0, 100.0)


def _cpu_us_per_call(fn: Callable[[], Any], n: int, repeats: int = 5) -> dict[str, float]:
    """Calling thread's CPU microseconds per call of ``fn`` (``n`` calls per repeat): median and best repeat."""
    for _ in range(max(1, n // 10)):
        fn()
    per: list[float] = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        per.append((time.thread_time() - t0) / n * 1e6)
    return {"p50_us": float(np.median(per)), "min_us": float(min(per)), "calls": n * repeats}


def message_pieces(model_path: Path, quick: bool = False) -> dict[str, Any]:
    """CPU per step of one 20-ms message and of one window's publication (see the module docstring)."""
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from emostream.models.classifier import load_classifier
    from emostream.streamer.core.events import Estimate
    from emostream.streamer.core.smoother import Smoother
    from emostream.streamer.core.vad import VadConfig
    from emostream.streamer.runtime.config import RuntimeConfig
    from emostream.streamer.runtime.runtime import Runtime
    from emostream.streamer.server.ingest import AudioIntake
    from emostream.streamer.server.limits import ServerLimits, TokenBucket
    from emostream.streamer.server.protocol import StartMessage, audio_frames, parse_control

    n = 2000 if quick else 20000
    frame_samples = SAMPLE_RATE_HZ * 20 // 1000
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(frame_samples) * 3000).astype("<i2").tobytes()
    wire = ws_frame(pcm, mask=b"\x01\x02\x03\x04")
    proto = ServerProtocol(state=State.OPEN, max_size=2**20)

    def parse() -> None:
        proto.receive_data(wire)
        proto.events_received()

    start = parse_control('{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","channels":1}')
    assert isinstance(start, StartMessage)
    limits = ServerLimits()
    clock = [0.0]
    bucket = TokenBucket.for_stream(limits, SAMPLE_RATE_HZ, 0.0)

    def take() -> None:
        clock[0] += 0.02
        bucket.take(frame_samples, clock[0])

    samples = audio_frames(pcm, start)
    classifier = load_classifier(model_path)
    runtime = Runtime(classifier, RuntimeConfig(vad=VadConfig(enabled=False)))
    runtime.start()
    try:
        handle = runtime.open_stream("ingest-bench", SAMPLE_RATE_HZ, 1)
        pieces = {
            "websockets_parse": _cpu_us_per_call(parse, n),
            "audio_frames": _cpu_us_per_call(lambda: audio_frames(pcm, start), n),
            "token_bucket": _cpu_us_per_call(take, n),
            "stream_push": _cpu_us_per_call(lambda: handle.push(samples, 0.0), n),
        }
        runtime.close_stream("ingest-bench")
        handle = runtime.open_stream("ingest-bench", SAMPLE_RATE_HZ, 1)
        intake = AudioIntake(
            handle, start, TokenBucket.for_stream(limits, SAMPLE_RATE_HZ, 0.0), lambda n, t: None
        )

        def feed() -> None:
            clock[0] += 0.02
            intake.feed(pcm, 0.0, clock[0])

        # what the server runs per message: the three steps above, with the push held until a
        # window is due (one push of 50 messages' audio per window at hop 1 s)
        pieces["intake_feed"] = _cpu_us_per_call(feed, n)
        runtime.close_stream("ingest-bench")
    finally:
        runtime.stop(drain=False)
    labels = tuple(classifier.labels)
    smoother = Smoother(len(labels))
    probs = rng.dirichlet(np.ones(len(labels))).astype(np.float32)

    def publish() -> None:
        state = smoother.update(probs)
        Estimate(
            stream="ingest-bench",
            seq=1,
            t_start_s=0.0,
            t_end_s=5.0,
            label=labels[state.label_index],
            confidence=state.confidence,
            probs=dict(zip(labels, state.smoothed.tolist(), strict=True)),
            raw_probs=dict(zip(labels, state.raw.tolist(), strict=True)),
            speech=True,
            speech_prob=1.0,
            latency_ms=12.3,
            model=str(classifier.name),
            dropped_samples=0,
        ).to_json()

    per_window = {"smoother_and_estimate_json": _cpu_us_per_call(publish, n // 10)}
    return {
        "message_bytes": len(pcm),
        "per_message": pieces,
        "per_message_sum_us": sum(pieces[k]["p50_us"] for k in ("websockets_parse", "intake_feed")),
        "per_window": per_window,
    }


def server_cost(
    server: ServerProcess, n_streams: int, duration_s: float, hop_s: float, ramp_s: float,
    max_p99_ms: float = 500.0, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Server CPU at 20- and 100-ms frames for ``n_streams``, and the per-message / per-window split."""
    runs: dict[str, Any] = {}
    for frame_ms in FRAME_MS:
        server.wait_idle()
        res = run_load(server, n_streams, duration_s=ramp_s + duration_s, hop_s=hop_s, frame_ms=frame_ms,
                       prefix=f"ingest{int(frame_ms)}", ramp_s=ramp_s)
        messages_per_s = n_streams * 1000.0 / frame_ms
        windows_per_s = n_streams / hop_s
        runs[f"{frame_ms:g}"] = {
            "frame_ms": frame_ms,
            "streams": n_streams,
            "server_cpu_cores": res.server_cpu_cores,
            "client_cpu_cores": res.client_cpu_cores,
            "messages_per_s": messages_per_s,
            "windows_per_s": windows_per_s,
            "server_cpu_us_per_message_all_in": res.server_cpu_cores * 1e6 / messages_per_s,
            "p99_ms": res.p99_ms(),
            "problems": res.problems(max_p99_ms),
        }
        log(f"  ingest: {n_streams} streams at {frame_ms:g}-ms frames: server {res.server_cpu_cores:.2f} cores, "
            f"{runs[f'{frame_ms:g}']['server_cpu_us_per_message_all_in']:.1f} us per message all in")
    a, b = runs[f"{FRAME_MS[0]:g}"], runs[f"{FRAME_MS[1]:g}"]
    # cores = m * per_message + w * per_window over the two runs (same windows, 5x the messages)
    per_message_s = (a["server_cpu_cores"] - b["server_cpu_cores"]) / (a["messages_per_s"] - b["messages_per_s"])
    per_window_s = (a["server_cpu_cores"] - per_message_s * a["messages_per_s"]) / a["windows_per_s"]
    problems = [f"{r['frame_ms']:g}-ms run: {p}" for r in runs.values() for p in r["problems"]]
    if per_message_s <= 0 or per_window_s <= 0:
        problems.append("the two runs do not split into a positive cost per message and per window")
    if problems:  # a run that did not keep up did not do all its work: its CPU says nothing per message
        log(f"  ingest: no per-message / per-window split: {'; '.join(problems)}")
    ok = not problems
    return {
        "runs": list(runs.values()),
        "problems": problems,
        "server_cpu_us_per_message": per_message_s * 1e6 if ok else None,
        "server_cpu_ms_per_window": per_window_s * 1e3 if ok else None,
        "message_share_at_20ms": per_message_s * a["messages_per_s"] / a["server_cpu_cores"] if ok else None,
    }
