"""StreamResampler.

Measured (soxr 0.5.0.post1, HQ): feeding the same mono float32 audio in ANY chunking (chunks of
0..3000 samples, including 1-sample chunks) and flushing gives output bit-identical to one-shot
``soxr.resample(x, in_rate, out_rate, quality="HQ")``, same length, max |diff| = 0.0, with no
start-up transient. So the tolerance stated here is exact equality.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.streamer.core.resample import StreamResampler

TOLERANCE = 0.0  # measured: bit-exact (see module docstring)


def seeded_audio(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 8000.0
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t)[:, None]
    x = tone + 0.1 * rng.standard_normal((n, channels))
    return x.astype(np.float32) if channels > 1 else x[:, 0].astype(np.float32)


def stream_in_chunks(rs: StreamResampler, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    outs, pos, i = [], 0, 0
    while pos < audio.shape[0]:
        n = sizes[i % len(sizes)]
        outs.append(rs.process(audio[pos : pos + n]))
        pos += n
        i += 1
    outs.append(rs.flush())
    return np.concatenate(outs)


@pytest.mark.parametrize("in_rate_hz,out_rate_hz", [(48000, 16000), (44100, 16000), (8000, 16000)])
@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40).filter(lambda s: any(s)))
def test_chunked_equals_one_shot(in_rate_hz: int, out_rate_hz: int, sizes: list[int]) -> None:
    audio = seeded_audio(in_rate_hz // 2, seed=in_rate_hz)  # 0.5 s
    expected = soxr.resample(audio, in_rate_hz, out_rate_hz, quality="HQ")
    got = stream_in_chunks(StreamResampler(in_rate_hz, out_rate_hz, 1), audio, sizes)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (out_rate_hz // 2,)
    assert np.max(np.abs(got - expected)) <= TOLERANCE


def test_one_sample_chunks_are_exact() -> None:
    audio = seeded_audio(4410, seed=3)
    expected = soxr.resample(audio, 44100, 16000, quality="HQ")
    got = stream_in_chunks(StreamResampler(44100, 16000, 1), audio, [1])
    np.testing.assert_array_equal(got, expected)


def test_stereo_mixdown_then_resample() -> None:
    stereo = seeded_audio(48000, channels=2, seed=5)
    stereo[:, 1] *= -0.5  # make the channels differ a lot
    mono = stereo.mean(axis=1, dtype=np.float32)
    expected = soxr.resample(mono, 48000, 16000, quality="HQ")
    got = stream_in_chunks(StreamResampler(48000, 16000, 2), stereo, [777, 1024, 5])
    np.testing.assert_array_equal(got, expected)
    # Identity fast path: only the mixdown, no delay, a fresh array.
    rs = StreamResampler(16000, 16000, 2)
    out = rs.process(stereo[:100])
    np.testing.assert_array_equal(out, (stereo[:100, 0] + stereo[:100, 1]) / np.float32(2))
    assert rs.flush().shape == (0,)


def test_int16_input_scaled_to_unit_range() -> None:
    pcm = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    out = StreamResampler(16000, 16000, 1).process(pcm)
    np.testing.assert_array_equal(out, np.array([-1.0, -0.5, 0.0, 0.5, 32767 / 32768], np.float32))


def test_identity_returns_copy_not_view() -> None:
    x = seeded_audio(64)
    out = StreamResampler(16000, 16000, 1).process(x)
    x[:] = 0.0
    assert np.abs(out).sum() > 1.0


def test_reset_and_flush_discipline() -> None:
    audio = seeded_audio(4800, seed=9)
    rs = StreamResampler(48000, 16000, 1)
    first = stream_in_chunks(rs, audio, [480])
    with pytest.raises(RuntimeError, match="reset"):
        rs.process(audio[:10])
    rs.reset()
    second = stream_in_chunks(rs, audio, [1000])
    np.testing.assert_array_equal(first, second)
    assert first.shape == (1600,)


@pytest.mark.parametrize(
    "args,match",
    [
        ((0, 16000, 1), "in_rate_hz"),
        ((48000, -1, 1), "out_rate_hz"),
        ((384001, 16000, 1), "384000"),
        ((48000, 16000, 0), "channels"),
        ((48000, 16000, 9), "channels"),
    ],
)
def test_invalid_config(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StreamResampler(*args)


def test_wrong_shape_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(frames, 2\)"):
        StreamResampler(48000, 16000, 2).process(np.zeros(10, np.float32))
