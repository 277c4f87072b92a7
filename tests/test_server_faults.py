"""Bad input and bad peers: each gets its error code and close code, while a healthy stream goes on.

Every test runs a healthy real-time-ish ingest client alongside the fault and checks that all of
its estimates arrive, in order, without a stall, and that the server accepts new work afterwards.
Two real servers run in-process on one real pipeline: ``strict`` (small limits, short timeouts,
a 3x real-time rate limit) and ``roomy`` (no rate limit to speak of, tiny queues, for slow readers).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsutil import (
    InProcessServer,
    StreamResult,
    check_estimate,
    client_frame,
    close_code_of,
    collect,
    encode,
    make_runtime,
    raw_connect,
    read_server_frames,
    stream_audio,
    synth_audio,
)

from emostream.models.windows import window_ends
from emostream.streamer.server.access import Access
from emostream.streamer.server.limits import ServerLimits

HOP_S = 0.5
MODEL_RATE_HZ = 16000
HEALTHY_S = 1.5  # audio seconds of the healthy stream
HEALTHY_SPEED = 1.5  # x real time
MAX_GAP_S = 1.5  # longest pause allowed between two of its estimates
STRICT = ServerLimits(
    max_connections=10,
    max_streams=4,
    max_subscribers=3,
    realtime_factor=3.0,
    burst_s=1.0,
    report_interval_s=0.2,
    idle_timeout_s=1.5,
    ping_interval_s=1.0,
    ping_timeout_s=1.0,
    close_timeout_s=1.0,
)
# queue_messages must hold a burst: one engine batch (up to 64 windows) is published at once
ROOMY = ServerLimits(realtime_factor=1000.0, burst_s=1000.0, queue_messages=64, write_buffer_bytes=4096)
START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}


def _server(model_dir: Path, limits: ServerLimits) -> Iterator[InProcessServer]:
    runtime = make_runtime(model_dir, hop_s=HOP_S, max_streams=64)
    runtime.start()
    try:
        with InProcessServer(runtime, limits, Access()) as srv:
            yield srv
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def strict(tiny_model_dir: Path) -> Iterator[InProcessServer]:
    yield from _server(tiny_model_dir, STRICT)


@pytest.fixture(scope="module")
def roomy(tiny_model_dir: Path) -> Iterator[InProcessServer]:
    yield from _server(tiny_model_dir, ROOMY)


def n_windows(seconds: float) -> int:
    """Estimates a stream of ``seconds`` gets: one per hop plus the flushed tail."""
    return len(window_ends(round(seconds * MODEL_RATE_HZ), round(HOP_S * MODEL_RATE_HZ)))


def check_healthy(result: StreamResult, seconds: float = HEALTHY_S) -> None:
    assert result.error is None, result.error
    assert result.ready is not None
    for msg in result.estimates:
        check_estimate(msg, result.ready["labels"])
    assert [m["seq"] for m in result.estimates] == list(range(n_windows(seconds)))
    gaps = np.diff(result.arrivals_s)
    assert gaps.size == 0 or gaps.max() < MAX_GAP_S, f"estimates stalled for {gaps.max():.2f} s"
    assert result.end is not None and result.end["throttled_frames"] == 0
    assert result.close_code == 1000


async def with_healthy(url: str, fault: Awaitable[Any], seed: int = 0) -> Any:
    """Run ``fault`` while a healthy client streams; check the healthy one; return the fault's result."""
    audio = synth_audio(HEALTHY_S, 48000, seed=seed)
    healthy = asyncio.create_task(
        stream_audio(url, audio, 48000, "pcm_s16le", speed=HEALTHY_SPEED, timeout_s=30)
    )
    await asyncio.sleep(0.2)  # the fault lands mid-stream
    try:
        out = await fault
    finally:
        result = await healthy
    check_healthy(result)
    return out


async def still_serving(url: str) -> None:
    """A fresh stream after the fault gets its ready and estimates."""
    result = await stream_audio(url, synth_audio(0.6, 16000), 16000, speed=20.0, timeout_s=20)
    assert result.error is None and result.close_code == 1000 and len(result.estimates) == 2


async def exchange(url: str, *messages: str | bytes, path: str = "/ingest") -> StreamResult:
    """Send ``messages`` on one connection, then read until the server closes."""
    result = StreamResult()
    async with connect(url + path, max_size=2**23, compression=None) as ws:
        reader = asyncio.create_task(collect(ws, result, 15))
        try:
            for message in messages:
                await ws.send(message)
                await asyncio.sleep(0.02)
        except ConnectionClosed:
            pass
        await reader
    return result


def run_fault(server: InProcessServer, fault: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        out = await with_healthy(server.url, fault())
        await still_serving(server.url)
        return out

    return asyncio.run(main())


def assert_error(result: StreamResult, code: str, close_code: int) -> None:
    assert result.error is not None, f"expected error {code}, got {result}"
    assert result.error["code"] == code
    assert result.error["message"]
    assert result.close_code == close_code


ONE_FRAME = encode(synth_audio(0.05, 16000), "pcm_s16le")


@pytest.mark.parametrize(
    ("messages", "code", "close_code"),
    [
        pytest.param(['{"type": "start", "sample_rate": 16000'], "bad_json", 1008, id="malformed-json"),
        pytest.param(["hello"], "bad_json", 1008, id="not-json"),
        pytest.param(['{"type": "begin"}'], "unknown_type", 1008, id="unknown-type"),
        pytest.param([ONE_FRAME], "no_start", 1008, id="audio-before-start"),
        pytest.param([json.dumps({**START, "encoding": "mp3"})], "bad_encoding", 1003, id="unknown-encoding"),
        pytest.param([json.dumps({**START, "sample_rate": 0})], "bad_sample_rate", 1008, id="zero-rate"),
        pytest.param(
            [json.dumps({**START, "sample_rate": -8000})], "bad_sample_rate", 1008, id="negative-rate"
        ),
        pytest.param(
            [json.dumps({**START, "sample_rate": 10**9})], "bad_sample_rate", 1008, id="absurd-rate"
        ),
        pytest.param([json.dumps({**START, "channels": 99})], "bad_channels", 1003, id="too-many-channels"),
        pytest.param(
            [json.dumps(START), ONE_FRAME + b"\x01"], "bad_frame_length", 1008, id="odd-frame-length"
        ),
        pytest.param(
            [json.dumps({**START, "encoding": "f32le"}), np.array([0.1, np.nan], "<f4").tobytes()],
            "bad_samples",
            1008,
            id="nan",
        ),
        pytest.param(
            [json.dumps({**START, "encoding": "f32le"}), np.array([np.inf, 0.0], "<f4").tobytes()],
            "bad_samples",
            1008,
            id="inf",
        ),
        pytest.param(
            [json.dumps(START), ONE_FRAME, "not audio"], "unexpected_text", 1003, id="text-for-audio"
        ),
        pytest.param(
            [json.dumps(START), ONE_FRAME, '{"type": "pause"}'], "unexpected_text", 1003, id="json-for-audio"
        ),
        pytest.param(
            [json.dumps(START), ONE_FRAME, json.dumps(START)], "duplicate_start", 1008, id="second-start"
        ),
        pytest.param(
            [json.dumps(START), b"\x00" * (STRICT.max_message_bytes + 2)], "too_big", 1009, id="too-big"
        ),
    ],
)
def test_bad_input(strict: InProcessServer, messages: list[str | bytes], code: str, close_code: int) -> None:
    result = run_fault(strict, lambda: exchange(strict.url, *messages))
    assert_error(result, code, close_code)


def test_message_beyond_hard_limit_is_cut_off_with_1009(strict: InProcessServer) -> None:
    result = run_fault(
        strict, lambda: exchange(strict.url, json.dumps(START), b"\x00" * (STRICT.hard_message_bytes + 2))
    )
    assert result.close_code == 1009


def test_audio_faster_than_real_time_is_throttled_not_fatal(strict: InProcessServer) -> None:
    seconds = 6.0
    audio = synth_audio(seconds, 16000, seed=7)
    result = run_fault(strict, lambda: stream_audio(strict.url, audio, 16000, speed=30.0, timeout_s=30))
    assert result.error is None and result.close_code == 1000
    throttled = [m for m in result.others if m["type"] == "throttled"]
    assert throttled and throttled[0]["realtime_factor"] == STRICT.realtime_factor
    assert result.end is not None
    assert result.end["received_frames"] == len(audio)
    assert 0 < result.end["throttled_frames"] < len(audio)
    assert (
        result.end["throttled_frames"] == max(m["dropped_total_frames"] for m in throttled)
        or len(throttled) >= 1
    )
    assert result.estimates  # the stream went on


def test_too_many_streams_is_1013(strict: InProcessServer) -> None:
    async def fault() -> list[int | None]:
        held: list[ClientConnection] = []
        codes: list[int | None] = []
        try:
            for _ in range(STRICT.max_streams + 1):  # the healthy stream holds one slot
                ws = await connect(strict.url + "/ingest")
                held.append(ws)
                await ws.send(json.dumps(START))
                msg = json.loads(await ws.recv())
                if msg["type"] == "error":
                    assert msg["code"] == "too_many_streams"
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)
                    codes.append(ws.close_code)
                    break
                assert msg["type"] == "ready"
                await ws.send(ONE_FRAME)
        finally:
            for ws in held:
                await ws.close()
        return codes

    assert run_fault(strict, fault) == [1013]


def test_too_many_subscribers_is_1013(strict: InProcessServer) -> None:
    async def fault() -> int | None:
        held = [await connect(strict.url + "/feed") for _ in range(STRICT.max_subscribers)]
        try:
            for ws in held:
                assert json.loads(await ws.recv())["type"] == "subscribed"
            extra = await exchange(strict.url, path="/feed")
        finally:
            for ws in held:
                await ws.close()
        assert_error(extra, "too_many_subscribers", 1013)
        return extra.close_code

    assert run_fault(strict, fault) == 1013


def test_too_many_connections_is_503(strict: InProcessServer) -> None:
    async def fault() -> list[int]:
        held: list[ClientConnection] = []
        statuses: list[int] = []
        try:
            for _ in range(STRICT.max_connections + 1):  # the healthy stream holds one
                try:
                    held.append(await connect(strict.url + "/ingest"))
                except InvalidStatus as exc:
                    statuses.append(exc.response.status_code)
                    break
        finally:
            for ws in held:
                await ws.close()
        return statuses

    assert run_fault(strict, fault) == [503]


def test_unknown_path_is_404(strict: InProcessServer) -> None:
    async def fault() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(strict.url + "/admin"):
                pass
        return info.value.response.status_code

    assert run_fault(strict, fault) == 404


def test_idle_ingest_is_closed(strict: InProcessServer) -> None:
    async def fault() -> StreamResult:
        result = StreamResult()
        async with connect(strict.url + "/ingest") as ws:
            await ws.send(json.dumps(START))
            await ws.send(ONE_FRAME)
            await collect(ws, result, STRICT.idle_timeout_s + 5)  # sends nothing more
        return result

    result = run_fault(strict, fault)
    assert_error(result, "idle_timeout", 1008)
    assert result.ready is not None


def test_slow_but_steady_ingest_outlives_the_idle_timeout(strict: InProcessServer) -> None:
    """The idle timer restarts with every message: gaps of half the limit, for three limits, stay open."""

    async def fault() -> StreamResult:
        result = StreamResult()
        async with connect(strict.url + "/ingest") as ws:
            await ws.send(json.dumps(START))
            reader = asyncio.create_task(collect(ws, result, 3 * STRICT.idle_timeout_s + 10))
            t_end = time.monotonic() + 3 * STRICT.idle_timeout_s
            while time.monotonic() < t_end:
                await ws.send(ONE_FRAME)
                await asyncio.sleep(STRICT.idle_timeout_s / 2)
            await ws.send(json.dumps({"type": "stop"}))
            await reader
        return result

    result = run_fault(strict, fault)
    assert result.error is None, result.error
    assert result.end is not None and result.close_code == 1000
    assert result.end["received_frames"] >= 6 * len(ONE_FRAME) // 2


def test_connection_that_never_starts_is_closed(strict: InProcessServer) -> None:
    async def fault() -> StreamResult:
        result = StreamResult()
        async with connect(strict.url + "/ingest") as ws:
            await collect(ws, result, STRICT.idle_timeout_s + 5)
        return result

    assert_error(run_fault(strict, fault), "idle_timeout", 1008)


def test_half_open_connection_is_closed_by_keepalive(strict: InProcessServer) -> None:
    async def fault() -> list[tuple[int, bytes]]:
        reader, writer = await raw_connect(strict.port, "/feed")
        try:  # reads, but never answers a ping
            return await read_server_frames(reader, STRICT.ping_interval_s + STRICT.ping_timeout_s + 5)
        finally:
            writer.transport.abort()

    frames = run_fault(strict, fault)
    assert any(op == 0x9 for op, _ in frames)  # pinged
    assert close_code_of(frames) == 1011


def test_client_vanishing_mid_frame(strict: InProcessServer) -> None:
    async def fault() -> None:
        for _ in range(3):
            reader, writer = await raw_connect(strict.port, "/ingest")
            writer.write(client_frame(0x1, json.dumps({**START, "stream": "vanisher"}).encode()))
            frames = await read_server_frames(reader, 0.5)  # ready
            assert frames and json.loads(frames[0][1])["type"] == "ready"
            writer.write(
                client_frame(0x2, ONE_FRAME[:100], declared_len=4000)
            )  # 100 of 4000 bytes, then gone
            await writer.drain()
            writer.transport.abort()
            for _ in range(50):  # the id is free again once the server has cleaned up
                await asyncio.sleep(0.05)
                probe = await exchange(
                    strict.url, json.dumps({**START, "stream": "vanisher"}), json.dumps({"type": "stop"})
                )
                if probe.error is None:
                    break
            assert probe.error is None and probe.close_code == 1000

    run_fault(strict, fault)


def test_subscriber_that_never_reads(strict: InProcessServer) -> None:
    async def fault() -> tuple[StreamResult, list[tuple[int, bytes]]]:
        reader, writer = await raw_connect(strict.port, "/feed", rcvbuf_bytes=2048)
        good = StreamResult()
        async with connect(strict.url + "/feed") as sub:
            assert json.loads(await sub.recv())["type"] == "subscribed"
            reading = asyncio.create_task(collect(sub, good, HEALTHY_S / HEALTHY_SPEED + 3))
            await asyncio.sleep(HEALTHY_S / HEALTHY_SPEED + 0.5)  # the raw one reads nothing meanwhile
            await sub.close()
            await reading
        frames = await read_server_frames(reader, STRICT.ping_interval_s + STRICT.ping_timeout_s + 5)
        writer.transport.abort()
        return good, frames

    good, frames = run_fault(strict, fault)
    assert len(good.estimates) >= n_windows(HEALTHY_S) - 1  # the reading one kept up (subscribed 0.2 s late)
    assert close_code_of(frames) == 1011  # the never-reader is dropped by the keepalive


def test_slow_subscriber_gets_lag_and_stalls_nobody(roomy: InProcessServer) -> None:
    seconds, n_streams = 30.0, 4  # 4 x 60 estimates: more than the slow subscriber's queue and sockets hold

    async def main() -> tuple[list[StreamResult], StreamResult, list[dict[str, Any]]]:
        reader, writer = await raw_connect(roomy.port, "/feed", rcvbuf_bytes=2048)
        prompt = StreamResult()
        async with connect(roomy.url + "/feed") as sub:
            assert json.loads(await sub.recv())["type"] == "subscribed"
            reading = asyncio.create_task(collect(sub, prompt, 30))
            streams = await asyncio.gather(
                *(
                    stream_audio(
                        roomy.url, synth_audio(seconds, 16000, seed=i), 16000, frame_s=0.2, speed=30.0
                    )
                    for i in range(n_streams)
                )
            )
            await asyncio.sleep(0.3)
            await sub.close()
            await reading
        slow: list[dict[str, Any]] = []
        async with asyncio.timeout(15):  # now read what the slow one was left with, until it goes quiet
            while frames := await read_server_frames(reader, 1.0):
                slow += [json.loads(p) for op, p in frames if op == 0x1]
        writer.transport.abort()
        return list(streams), prompt, slow

    streams, prompt, slow = asyncio.run(main())
    n = n_windows(seconds)
    for result in streams:  # the ingest clients and the prompt subscriber lost nothing
        assert result.ready is not None and result.close_code == 1000
        assert [m["seq"] for m in result.estimates] == list(range(n))
        assert [m for m in prompt.estimates if m["stream"] == result.ready["stream"]] == result.estimates
    assert "lag" not in prompt.types
    lags = [m for m in slow if m["type"] == "lag"]
    got = [m for m in slow if m["type"] == "estimate"]
    assert lags and lags[0]["dropped"] > 0
    assert sum(m["dropped"] for m in lags) == n_streams * n - len(got) == lags[-1]["dropped_total"]
    last = {(m["stream"], m["seq"]) for m in got}
    assert all((r.ready["stream"], n - 1) in last for r in streams if r.ready)  # the newest kept


# a subscriber that never reads while estimates keep coming: buffers full within a second
DEAF = ServerLimits(
    realtime_factor=1000.0,
    burst_s=1000.0,
    queue_messages=8,
    write_buffer_bytes=1024,
    ping_interval_s=1.0,
    ping_timeout_s=1.0,
    close_timeout_s=1.0,
)


def test_subscriber_that_never_reads_under_load_is_closed(tiny_model_dir: Path) -> None:
    """With its buffers full the keepalive ping cannot reach it; the send timeout closes it anyway,
    within ping_interval + ping_timeout + close_timeout of the first send that could not complete."""
    deaf_s = 2.0 + DEAF.ping_interval_s + DEAF.ping_timeout_s + DEAF.close_timeout_s + 2.0

    async def main(server: InProcessServer) -> float:
        reader, writer = await raw_connect(server.port, "/feed", rcvbuf_bytes=2048)
        try:
            await asyncio.gather(
                *(
                    stream_audio(server.url, synth_audio(30.0, 16000, seed=i), 16000, frame_s=0.2, speed=30.0)
                    for i in range(2)
                )
            )  # 2 x 60 estimates at once
            await asyncio.sleep(deaf_s)  # reading nothing
            t0 = time.monotonic()
            await read_server_frames(reader, 3.0)  # what was left, then the end; a live one would stream on
            return time.monotonic() - t0
        finally:
            writer.transport.abort()

    for server in _server(tiny_model_dir, DEAF):
        elapsed_s = asyncio.run(main(server))
        assert elapsed_s < 0.5  # gone already: without the send timeout the ping waits behind the full buffer


def test_subscriber_sending_is_an_error(strict: InProcessServer) -> None:
    async def fault() -> StreamResult:
        return await exchange(strict.url, "hi", path="/feed")

    assert_error(run_fault(strict, fault), "unexpected_message", 1003)
