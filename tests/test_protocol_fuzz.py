"""streamer.server.protocol under arbitrary input: only ProtocolError ever escapes, valid messages round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.streamer.server.limits import ServerLimits, TokenBucket
from emostream.streamer.server.protocol import (
    ENCODINGS,
    ERROR_CLOSE_CODES,
    ProtocolError,
    StartMessage,
    StopMessage,
    decode_audio,
    decode_pcm,
    parse_control,
)

LIMITS = ServerLimits()
FUZZ = settings(max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
start_like = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        "sample_rate": st.integers(-10, 10**7)
        | st.floats()
        | st.text(max_size=5)
        | st.none()
        | st.booleans(),
        "encoding": st.sampled_from([*ENCODINGS, "pcm_s24le", "PCM_S16LE", ""]) | st.integers(),
        "channels": st.integers(-2, 20) | st.floats() | st.none(),
        "stream": st.text(max_size=80) | st.integers() | st.none(),
    },
)
valid_starts = st.builds(
    StartMessage,
    sample_rate_hz=st.integers(LIMITS.min_sample_rate_hz, LIMITS.max_sample_rate_hz),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    channels=st.integers(1, LIMITS.max_channels),
    stream=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True),
)


def _parse_or_protocol_error(text: str | bytes) -> None:
    try:
        parse_control(text, LIMITS)
    except ProtocolError as exc:
        assert exc.code in ERROR_CLOSE_CODES
        assert exc.close_code == ERROR_CLOSE_CODES[exc.code]
        assert exc.message


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_control(data: bytes) -> None:
    _parse_or_protocol_error(data)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_as_control(text: str) -> None:
    _parse_or_protocol_error(text)


@FUZZ
@given(json_values | start_like)
def test_arbitrary_json_as_control(value: object) -> None:
    _parse_or_protocol_error(json.dumps(value))


def test_deeply_nested_and_huge_json_are_protocol_errors() -> None:
    for text in ("[" * 4000, '{"type":"start","sample_rate":' + "9" * 5000 + "}", '{"a":' * 1000):
        with pytest.raises(ProtocolError) as info:
            parse_control(text, ServerLimits(max_control_chars=100_000))
        assert info.value.code == "bad_json"


@FUZZ
@given(valid_starts)
def test_valid_start_round_trips(msg: StartMessage) -> None:
    assert parse_control(msg.to_json(), LIMITS) == msg


def test_stop_round_trips() -> None:
    assert parse_control(StopMessage().to_json(), LIMITS) == StopMessage()


@FUZZ
@given(valid_starts, st.binary(max_size=512))
def test_arbitrary_bytes_as_audio(start: StartMessage, data: bytes) -> None:
    try:
        audio = decode_audio(data, start)
    except ProtocolError as exc:
        assert exc.code in ("bad_frame_length", "bad_samples")
    else:
        assert audio.dtype == np.float32
        assert audio.shape == (len(data) // start.frame_bytes, start.channels)
        assert np.isfinite(audio).all()


@FUZZ
@given(valid_starts, st.integers(0, 64), st.integers(0, 2**32 - 1))
def test_valid_audio_round_trips(start: StartMessage, n_frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n_frames, start.channels))
    if start.encoding == "pcm_s16le":
        pcm = np.round(x * 32767).astype("<i2")
        expect = pcm.astype(np.float32) / 32768.0
    else:
        pcm = x.astype("<f4")
        expect = pcm.astype(np.float32)
    np.testing.assert_array_equal(decode_audio(pcm.tobytes(), start), expect)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"type": "hello"}', "unknown_type"),
        ("{}", "unknown_type"),
        ('{"type":"start","sample_rate":0,"encoding":"pcm_s16le"}', "bad_sample_rate"),
        ('{"type":"start","sample_rate":-16000,"encoding":"pcm_s16le"}', "bad_sample_rate"),
        ('{"type":"start","sample_rate":1000000000,"encoding":"pcm_s16le"}', "bad_sample_rate"),
        ('{"type":"start","sample_rate":16000.5,"encoding":"pcm_s16le"}', "bad_sample_rate"),
        ('{"type":"start","sample_rate":true,"encoding":"pcm_s16le"}', "bad_sample_rate"),
        ('{"type":"start","sample_rate":16000,"encoding":"mp3"}', "bad_encoding"),
        ('{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","channels":64}', "bad_channels"),
        ('{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","channels":0}', "bad_channels"),
        ('{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","stream":"a b"}', "bad_stream_id"),
        ('{"type":"start","sample_rate":16000,"encoding":"pcm_s16le","stream":""}', "bad_stream_id"),
    ],
)
def test_each_bad_control_message_has_its_code(message: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(message, LIMITS)
    assert info.value.code == code
    assert info.value.close_code == ERROR_CLOSE_CODES[code]


def test_too_long_control_message() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(" " * (LIMITS.max_control_chars + 1), LIMITS)
    assert info.value.code == "bad_json"


def test_nan_and_inf_are_bad_samples() -> None:
    start = StartMessage(16000, "f32le", 1)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ProtocolError) as info:
            decode_audio(np.array([0.0, bad], dtype="<f4").tobytes(), start)
        assert info.value.code == "bad_samples"


@FUZZ
@pytest.mark.parametrize("realtime_per_s", [None, 400.0], ids=["plain", "catch-up"])
@given(requests=st.lists(st.tuples(st.integers(0, 5000), st.floats(0.0, 0.5)), max_size=50))
def test_token_bucket_never_exceeds_rate_plus_burst(realtime_per_s: float | None, requests: list[tuple[int, float]]) -> None:
    """With or without the real-time catch-up allowance, grants stay within burst + rate x time."""
    bucket = TokenBucket(rate_per_s=1000.0, capacity=500.0, now_s=0.0, realtime_per_s=realtime_per_s)
    now_s, granted = 0.0, 0
    for n, dt in requests:
        now_s += dt
        got = bucket.take(n, now_s)
        assert 0 <= got <= n
        granted += got
        assert granted <= 500 + 1000.0 * now_s + 1e-6


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate_per_s=100.0, capacity=50.0, now_s=0.0)
    assert bucket.take(80, 0.0) == 50
    assert bucket.take(80, 0.2) == 20
    assert bucket.take(80, 10.0) == 50  # capped at capacity


def test_a_stream_behind_real_time_may_catch_up() -> None:
    rate = 100.0  # frames per second of real time; 2x sustained, 5 s burst
    bucket = TokenBucket(rate_per_s=2 * rate, capacity=5 * rate, now_s=0.0, realtime_per_s=rate)
    assert bucket.take(100, 1.0) == 100  # on time
    assert bucket.take(1200, 13.0) == 1200  # stalled 12 s, then the whole backlog: still behind real time
    assert bucket.take(10_000, 13.0) == 500  # now ahead: only the burst ...
    assert bucket.take(1000, 14.0) == 200  # ... and then 2x real time
    plain = TokenBucket(rate_per_s=2 * rate, capacity=5 * rate, now_s=0.0)
    assert plain.take(100, 1.0) == 100
    plain.take(0, 13.0)
    assert plain.take(1200, 13.0) == 500  # without the real-time allowance the backlog is cut


# ---- PCM wire decoding -------------------------------------------------------------------------


def test_decode_pcm_values_and_shape() -> None:
    s16 = np.array([[-32768, 16384], [0, 32767]], dtype="<i2")
    out = decode_pcm(s16.tobytes(), "pcm_s16le", 2)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[-1.0, 0.5], [0.0, 32767 / 32768]])
    f32 = np.array([0.25, -0.75, 1.5], dtype="<f4")
    np.testing.assert_array_equal(decode_pcm(f32.tobytes(), "f32le", 1), [[0.25], [-0.75], [1.5]])
    assert decode_pcm(b"", "f32le", 3).shape == (0, 3)


def test_decode_pcm_errors() -> None:
    with pytest.raises(ValueError, match="not a whole number of 4-byte frames"):
        decode_pcm(b"\x00" * 6, "pcm_s16le", 2)
    with pytest.raises(ValueError, match="not a whole number of 8-byte frames"):
        decode_pcm(b"\x00" * 12, "f32le", 2)
    with pytest.raises(ValueError, match="non-finite"):
        decode_pcm(np.array([0.0, np.nan], "<f4").tobytes(), "f32le", 1)
    with pytest.raises(ValueError, match="frame 1, channel 0"):
        decode_pcm(np.array([0.0, 0.0, np.inf, 0.0], "<f4").tobytes(), "f32le", 2)
    with pytest.raises(ValueError, match="encoding"):
        decode_pcm(b"\x00\x00", "pcm_u8", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        decode_pcm(b"\x00\x00", "pcm_s16le", 0)
