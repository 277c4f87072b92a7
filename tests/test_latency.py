"""Latency at the rates real devices use: an estimate leaves once the wire frame holding the window's last sample has arrived.

A lock-step client (tests/wsutil.py's server, ``emostream serve`` in a subprocess) sends frames of
20 or 100 ms at 16, 44.1 or 48 kHz, faster than real time except that it pauses before the frame
that holds a window's last sample (as a real-time client would leave the server idle), sends it,
and waits for that window's estimate: the time between sending the frame and receiving the estimate is the
latency a client sees. It must not depend on the input rate (the resampler holds nothing back;
streamer/core/resample.py), and the server's ``latency_ms`` counts from the same frame's arrival.
The microphone path is checked the same way in tests/test_mic.py.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from wsutil import ServeProcess, encode, synth_audio

HOP_S = 0.5
MODEL_RATE_HZ = 16000
N_WINDOWS = 8
SETTLE_S = 0.08  # pause before a window's last frame
WAIT_S = 2.0  # an estimate not back this long after its frame counts as held back
SAME_WITHIN_MS = 15.0  # "within a few ms" of the 16 kHz client, with room for a loaded 2-core machine
FAST = ["--no-vad", "--hop-s", str(HOP_S), "--limit-realtime-factor", "1000", "--limit-burst-s", "1000"]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with ServeProcess(["--model", str(tiny_model_dir), *FAST]) as srv:
        yield srv


def completing_frame_ends(rate_hz: int, frame_samples: int, n_windows: int) -> list[int]:
    """For window k (ending at model sample k * hop), the input count at the end of the frame holding its last sample."""
    hop = round(HOP_S * MODEL_RATE_HZ)
    out = []
    for k in range(1, n_windows + 1):
        needed = -(-k * hop * rate_hz // MODEL_RATE_HZ)  # input samples up to the window's end time
        out.append(-(-needed // frame_samples) * frame_samples)
    return out


async def lockstep(url: str, rate_hz: int, frame_ms: int) -> tuple[list[float], list[float]]:
    """(latency seen by the client, the server's latency_ms) for each of N_WINDOWS windows, in ms."""
    frame = rate_hz * frame_ms // 1000
    audio = synth_audio(HOP_S * (N_WINDOWS + 1) + 0.2, rate_hz, seed=rate_hz)
    due = completing_frame_ends(rate_hz, frame, N_WINDOWS)
    client_ms: list[float] = []
    server_ms: list[float] = []
    async with connect(url + "/ingest", compression=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate_hz, "encoding": "pcm_s16le"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        sent = 0
        for k, end in enumerate(due):
            while sent < end - frame:
                await ws.send(encode(audio[sent : sent + frame], "pcm_s16le"))
                sent += frame
            await asyncio.sleep(SETTLE_S)  # as in real time: the earlier frames are processed by now
            t_sent = time.monotonic()
            await ws.send(encode(audio[sent : sent + frame], "pcm_s16le"))
            sent += frame
            try:
                async with asyncio.timeout(WAIT_S):
                    msg = json.loads(await ws.recv())
            except TimeoutError:
                raise AssertionError(
                    f"{rate_hz} Hz, {frame_ms} ms frames: no estimate for window {k} within {WAIT_S:g} s of "
                    "the frame that holds its last sample (held back until the next frame?)"
                ) from None
            client_ms.append((time.monotonic() - t_sent) * 1000)
            assert msg["type"] == "estimate" and msg["seq"] == k, msg
            assert round(msg["t_end_s"] * MODEL_RATE_HZ) == (k + 1) * round(HOP_S * MODEL_RATE_HZ)
            server_ms.append(msg["latency_ms"])
        await ws.send(json.dumps({"type": "stop"}))
    return client_ms, server_ms


@pytest.mark.timeout(180)
def test_latency_does_not_depend_on_the_input_rate(server: ServeProcess) -> None:
    async def main() -> dict[tuple[int, int], tuple[list[float], list[float]]]:
        return {
            (rate, frame_ms): await lockstep(server.url, rate, frame_ms)
            for frame_ms in (20, 100)
            for rate in (16000, 44100, 48000)
        }

    results = asyncio.run(main())
    p50 = {key: statistics.median(client) for key, (client, _) in results.items()}
    print("client-measured latency p50 (ms):", {f"{r} Hz/{f} ms": round(v, 1) for (r, f), v in p50.items()})
    for (rate, frame_ms), (client, server_side) in results.items():
        reference = p50[(16000, frame_ms)]
        assert p50[(rate, frame_ms)] <= reference + SAME_WITHIN_MS, (rate, frame_ms, p50)
        # the server counts from the frame's arrival, which is after the client sent it
        for c, s in zip(client, server_side, strict=True):
            assert s <= c + 1.0, (rate, frame_ms, client, server_side)
