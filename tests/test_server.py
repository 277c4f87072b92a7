"""`emostream serve` end to end: a real server subprocess on loopback, real websockets clients.

Ingest at 16 and 48 kHz in both encodings, the feed (all streams and one), the token (header,
query, environment), the Origin allow-list, an unknown path, SIGTERM, and the example client.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from oracle import offline_window_probs
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsutil import ServeProcess, StreamResult, check_estimate, collect, encode, stream_audio, synth_audio

from emostream.models.modelfile import load_classifier
from emostream.models.windows import window_ends
from emostream.streamer.server.access import exposure_warning, is_loopback
from emostream.streamer.server.hub import Outbox

HOP_S = 0.5
MODEL_RATE_HZ = 16000
FAST = ["--no-vad", "--hop-s", str(HOP_S), "--limit-realtime-factor", "1000", "--limit-burst-s", "1000"]
TOKEN = "s3cret-t0ken"
ORIGIN = "https://app.example"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with ServeProcess(["--model", str(tiny_model_dir), *FAST]) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_server(tiny_model_dir: Path):
    args = ["--model", str(tiny_model_dir), *FAST, "--allow-origin", ORIGIN]
    with ServeProcess(args, env={"EMOSTREAM_TOKEN": TOKEN}) as srv:
        yield srv


def expected_estimates(seconds: float) -> int:
    """Windows the streamer makes of a recording this long: one per hop plus the flushed tail."""
    return len(window_ends(round(seconds * MODEL_RATE_HZ), round(HOP_S * MODEL_RATE_HZ)))


def check_stream(result: StreamResult, seconds: float, stream: str | None = None) -> None:
    assert result.error is None, result.error
    assert result.ready is not None
    labels = result.ready["labels"]
    for key in ("stream", "labels", "sample_rate", "model", "window_s", "hop_s"):
        assert key in result.ready
    assert result.ready["hop_s"] == HOP_S
    if stream is not None:
        assert result.ready["stream"] == stream
    for msg in result.estimates:
        check_estimate(msg, labels)
        assert msg["stream"] == result.ready["stream"]
    assert [m["seq"] for m in result.estimates] == list(range(len(result.estimates)))
    assert len(result.estimates) == expected_estimates(seconds)
    assert result.estimates[-1]["t_end_s"] == pytest.approx(seconds, abs=0.01)
    assert result.end is not None and result.end["estimates"] == len(result.estimates)
    assert result.end["dropped_messages"] == 0 and result.end["throttled_frames"] == 0
    assert result.close_code == 1000


@pytest.mark.parametrize(
    ("rate_hz", "encoding", "channels"),
    [(16000, "pcm_s16le", 1), (48000, "pcm_s16le", 1), (16000, "f32le", 1), (48000, "f32le", 2)],
)
def test_ingest_returns_estimates(server: ServeProcess, rate_hz: int, encoding: str, channels: int) -> None:
    seconds = 2.25
    audio = synth_audio(seconds, rate_hz, channels, seed=rate_hz + channels)
    result = asyncio.run(stream_audio(server.url, audio, rate_hz, encoding, speed=20.0, timeout_s=30))
    check_stream(result, seconds)
    assert result.ready is not None and result.ready["sample_rate"] == rate_hz
    assert result.ready["encoding"] == encoding and result.ready["channels"] == channels


@pytest.mark.parametrize("frame_s", [0.0217, 0.02, 0.35])
def test_ingest_windows_equal_offline(server: ServeProcess, tiny_model_dir: Path, frame_s: float) -> None:
    """16-bit messages are held and pushed once per window (``IngestSession``): whatever the message
    size (347 frames, dividing the hop or not; 5600, spanning a hop), every window's raw probabilities
    equal the offline reference on the same 16-bit audio, the stopped stream's tail included."""
    seconds = 3.3
    audio = synth_audio(seconds, MODEL_RATE_HZ, 1, seed=7)
    result = asyncio.run(stream_audio(server.url, audio, MODEL_RATE_HZ, frame_s=frame_s, speed=20.0, timeout_s=30))
    check_stream(result, seconds)
    sent = np.frombuffer(encode(audio, "pcm_s16le"), dtype="<i2").astype(np.float32) / 32768.0
    classifier = load_classifier(tiny_model_dir, threads=1)
    ref = offline_window_probs(sent, classifier, round(HOP_S * MODEL_RATE_HZ))
    got = np.array([[m["raw_probs"][label] for label in classifier.labels] for m in result.estimates])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-3)  # the wire rounds probabilities


def test_ingest_keeps_order_across_fragmented_messages(server: ServeProcess, tiny_model_dir: Path) -> None:
    """Audio sent before ``ready`` (queued for ``recv``) and fragmented messages (which detach the
    direct path until ``recv`` has read them) are still handled in the order sent: every window
    equals the offline reference."""
    seconds = 2.6
    audio = synth_audio(seconds, MODEL_RATE_HZ, 1, seed=11)
    pcm = encode(audio, "pcm_s16le")
    step = 640  # 20 ms of 16-bit mono

    async def run() -> StreamResult:
        result = StreamResult()
        async with connect(server.url + "/ingest", compression=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": MODEL_RATE_HZ, "encoding": "pcm_s16le"}))
            reader = asyncio.create_task(collect(ws, result, 30))
            for k, i in enumerate(range(0, len(pcm), step)):
                chunk = pcm[i : i + step]
                if k % 9 == 4:  # a fragmented message: 3 frames of 2, 2 and 636 bytes
                    await ws.send([chunk[:2], chunk[2:4], chunk[4:]])
                else:
                    await ws.send(chunk)
                if k % 25 == 24:
                    await asyncio.sleep(0.01)
            await ws.send(json.dumps({"type": "stop"}))
            await reader
        return result

    result = asyncio.run(run())
    check_stream(result, seconds)
    sent = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    classifier = load_classifier(tiny_model_dir, threads=1)
    ref = offline_window_probs(sent, classifier, round(HOP_S * MODEL_RATE_HZ))
    got = np.array([[m["raw_probs"][label] for label in classifier.labels] for m in result.estimates])
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_feed_all_streams_and_one(server: ServeProcess) -> None:
    seconds = 2.0

    async def main() -> tuple[StreamResult, StreamResult, list[StreamResult]]:
        every, only_a = StreamResult(), StreamResult()
        async with (
            connect(server.url + "/feed") as feed_all,
            connect(server.url + "/feed?stream=feed-a") as feed_a,
        ):
            for ws in (feed_all, feed_a):
                hello = json.loads(await ws.recv())
                assert hello["type"] == "subscribed"
            readers = [
                asyncio.create_task(collect(feed_all, every, 30)),
                asyncio.create_task(collect(feed_a, only_a, 30)),
            ]
            streams = await asyncio.gather(
                stream_audio(
                    server.url, synth_audio(seconds, 16000, seed=1), 16000, stream="feed-a", speed=10
                ),
                stream_audio(
                    server.url, synth_audio(seconds, 48000, seed=2), 48000, stream="feed-b", speed=10
                ),
            )
            await asyncio.sleep(0.3)  # the last estimates reach the subscribers too
            for ws in (feed_all, feed_a):
                await ws.close()
            await asyncio.gather(*readers)
        return every, only_a, list(streams)

    every, only_a, (a, b) = asyncio.run(main())
    check_stream(a, seconds, "feed-a")
    check_stream(b, seconds, "feed-b")
    by_stream = {s: [m for m in every.estimates if m["stream"] == s] for s in ("feed-a", "feed-b")}
    assert by_stream["feed-a"] == a.estimates
    assert by_stream["feed-b"] == b.estimates
    assert only_a.estimates == a.estimates
    assert "lag" not in every.types


def test_unknown_path_is_404(server: ServeProcess) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/nope"):
                pass
        assert info.value.response.status_code == 404

    asyncio.run(main())


def test_token_required(token_server: ServeProcess) -> None:
    audio = synth_audio(1.0, 16000)

    async def status_of(path: str, headers: dict[str, str] | None = None) -> int:
        try:
            async with connect(token_server.url + path, additional_headers=headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def main() -> None:
        assert await status_of("/ingest") == 401
        assert await status_of("/feed") == 401
        assert await status_of("/ingest", {"Authorization": "Bearer wrong"}) == 401
        assert await status_of("/ingest?token=wrong") == 401
        assert await status_of("/feed?token=" + TOKEN) == 101
        assert await status_of("/feed", {"Authorization": f"Bearer {TOKEN}"}) == 101
        good = await stream_audio(
            token_server.url, audio, 16000, speed=20, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        check_stream(good, 1.0)

    asyncio.run(main())
    assert TOKEN not in token_server.output  # never logged


def test_origin_allow_list(token_server: ServeProcess) -> None:
    async def status_of(origin: str | None) -> int:
        try:
            async with connect(token_server.url + "/feed?token=" + TOKEN, origin=origin):  # type: ignore[arg-type]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def main() -> None:
        assert await status_of(ORIGIN) == 101
        assert await status_of(None) == 101  # not a browser
        assert await status_of("https://evil.example") == 403
        assert await status_of("null") == 403

    asyncio.run(main())


@pytest.mark.parametrize(
    ("sig", "event_loop"), [(signal.SIGTERM, "auto"), (signal.SIGINT, "asyncio")], ids=["sigterm-uvloop", "sigint-asyncio"]
)
def test_signal_closes_connections_with_1001(tiny_model_dir: Path, sig: signal.Signals, event_loop: str) -> None:
    """Ctrl-C (SIGINT) or SIGTERM, on either event loop: 1001 to every client, then exit 0."""

    async def main(srv: ServeProcess) -> tuple[StreamResult, StreamResult, int]:
        ingest, feed = StreamResult(), StreamResult()
        audio = synth_audio(20.0, 16000)
        async with connect(srv.url + "/feed") as sub:
            feed_reader = asyncio.create_task(collect(sub, feed, 20))
            streamer = asyncio.create_task(stream_audio(srv.url, audio, 16000, speed=1.0, timeout_s=20))
            for _ in range(100):  # wait (bounded) until estimates flow
                if feed.estimates:
                    break
                await asyncio.sleep(0.1)
            rc = await asyncio.to_thread(srv.terminate, sig)
            ingest = await streamer
            await feed_reader
        return ingest, feed, rc

    with ServeProcess(["--model", str(tiny_model_dir), *FAST, "--event-loop", event_loop]) as srv:
        ingest, feed, rc = asyncio.run(main(srv))
    assert feed.estimates, srv.output
    assert ingest.close_code == 1001
    assert feed.close_code == 1001
    assert rc == 0, srv.output


def test_example_client_prints_estimates(server: ServeProcess, tmp_path: Path) -> None:
    seconds = 1.5
    wav = tmp_path / "clip.wav"
    sf.write(wav, synth_audio(seconds, 22050, channels=2), 22050, subtype="PCM_16")
    out = subprocess.run(
        [sys.executable, str(REPO / "docs" / "examples" / "ws_client.py"), str(wav), "--url", server.url + "/ingest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert '"type": "ready"' in lines[0]
    estimates = [line for line in lines if line.startswith("[")]
    assert len(estimates) == expected_estimates(seconds)
    assert '"type": "end"' in lines[-1]
    assert "closed: 1000" in out.stderr


def test_bad_tuning_options_are_refused() -> None:
    for bad in (["--gil-switch-ms", "0"], ["--gil-switch-ms", "5000"], ["--max-wait-ms", "-1"], ["--max-batch", "0"]):
        out = subprocess.run(
            [sys.executable, "-m", "emostream.models.cli", "serve", "--port", "0", *bad],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
        assert out.returncode in (1, 2), (bad, out.stderr)
        assert "emostream" in out.stderr and ("must be" in out.stderr), (bad, out.stderr)
        assert "Traceback" not in out.stderr


def test_warns_when_exposed_without_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "t") is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning is not None and "WITHOUT a token" in warning


def test_outbox_drops_oldest_and_reports_lag() -> None:
    async def main() -> list[str | None]:
        box = Outbox(3)
        for i in range(5):
            box.put(str(i))
        box.close()
        box.put("after close")  # ignored
        return [await box.get() for _ in range(5)]

    lag, *rest = asyncio.run(main())
    assert lag is not None and json.loads(lag) == {"type": "lag", "dropped": 2, "dropped_total": 2}
    assert rest == ["2", "3", "4", None]


def test_every_limit_option_shows_its_field_help_and_default() -> None:
    """`--limit-*` help is each ServerLimits field's metadata (written once, beside the field)."""
    import argparse
    import dataclasses

    from emostream.streamer.cli.serve import add_limit_options, limits_from_args
    from emostream.streamer.server.limits import ServerLimits

    parser = argparse.ArgumentParser()
    add_limit_options(parser)
    helps = {a.dest: a.help for a in parser._actions if a.dest.startswith("limit_")}
    for f in dataclasses.fields(ServerLimits):
        assert f.metadata["help"] and helps["limit_" + f.name] == f"{f.metadata['help']} (default {f.default})"
    assert limits_from_args(parser.parse_args([])) == ServerLimits()
    assert limits_from_args(parser.parse_args(["--limit-max-streams", "3"])).max_streams == 3
