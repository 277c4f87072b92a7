"""Send an audio file to `emostream serve` over WebSocket and print the estimates that come back.

    python docs/examples/ws_client.py speech.wav [--url ws://127.0.0.1:8765/ingest] [--token T] [--realtime]

The file is read with soundfile and sent as 16-bit PCM (pcm_s16le) in 40 ms frames, at its own
sample rate and channel count (the server resamples and mixes down). Without --realtime the
frames go as fast as the server's rate limit allows (the ``ready`` message states it); with
--realtime, at the pace of real time, like a live source. Needs only websockets, soundfile, numpy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

FRAME_S = 0.04  # 40 ms frames
PACE_MARGIN = 0.8  # without --realtime, send at 80 % of the server's allowed rate


def to_pcm_s16le(block: np.ndarray) -> bytes:
    """(frames, channels) float in [-1, 1] -> interleaved little-endian int16 bytes."""
    return (np.clip(block, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def describe(msg: dict) -> str:
    kind = msg.get("type")
    if kind == "estimate":
        label = msg["label"] if msg["speech"] else "(no speech)"
        probs = " ".join(f"{k}={v:.2f}" for k, v in msg["probs"].items())
        return (
            f"[{msg['t_start_s']:7.2f}-{msg['t_end_s']:7.2f} s] {label:<12} conf={msg['confidence']:.2f}  "
            f"{probs}  latency={msg['latency_ms']:.0f} ms"
        )
    return json.dumps(msg)


async def send_file(path: str, url: str, token: str | None, realtime: bool) -> int:
    audio, rate_hz = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    frames_per_message = max(1, round(FRAME_S * rate_hz))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers, max_size=2**22, compression=None) as ws:
        start = {"type": "start", "sample_rate": rate_hz, "encoding": "pcm_s16le", "channels": audio.shape[1]}
        await ws.send(json.dumps(start))
        ready = json.loads(await ws.recv())
        print(describe(ready))
        if ready.get("type") != "ready":
            return 1
        speed = 1.0 if realtime else PACE_MARGIN * float(ready.get("realtime_factor", 1.0))
        burst_s = 0.0 if realtime else float(ready.get("burst_s", 0.0)) * PACE_MARGIN

        async def sender() -> None:
            t0 = time.monotonic()
            for i in range(0, audio.shape[0], frames_per_message):
                sent_s = i / rate_hz
                delay_s = (sent_s - burst_s) / speed - (time.monotonic() - t0)
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                await ws.send(to_pcm_s16le(audio[i : i + frames_per_message]))
            await ws.send(json.dumps({"type": "stop"}))

        send_task = asyncio.create_task(sender())
        status = 0
        try:
            async for raw in ws:
                msg = json.loads(raw)
                print(describe(msg), flush=True)
                if msg.get("type") == "error":
                    status = 1
        except ConnectionClosed:
            status = 1
        finally:
            send_task.cancel()
        code = ws.close_code
        print(f"closed: {code} {ws.close_reason or ''}".rstrip(), file=sys.stderr)
        return status if code == 1000 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="an audio file soundfile can read (wav, flac, ogg, ...)")
    parser.add_argument(
        "--url", default="ws://127.0.0.1:8765/ingest", help="ingest URL (default %(default)s)"
    )
    parser.add_argument("--token", default=None, help="bearer token, if the server has one")
    parser.add_argument("--realtime", action="store_true", help="send at the pace of real time")
    args = parser.parse_args()
    try:
        return asyncio.run(send_file(args.file, args.url, args.token, args.realtime))
    except InvalidStatus as exc:  # 401 (token), 403 (Origin), 404 (path), 503 (full)
        print(
            f"ws_client: the server refused the connection: HTTP {exc.response.status_code}", file=sys.stderr
        )
    except (OSError, sf.LibsndfileError) as exc:
        print(f"ws_client: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
