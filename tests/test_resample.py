"""StreamResampler: exact in any chunking, nothing held back, the filter it promises.

Properties: the same audio fed in ANY chunking (0..3000 samples, 1-sample chunks, the rates of real
devices) gives output bit-identical to the one-shot ``resample`` (the offline path), so the
tolerance is exact equality; after each chunk every output sample whose time the chunk reached
is out (``ceil(k * out / in)`` after ``k`` inputs); pass band flat, stop band attenuated.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.streamer.core.resample import ATTENUATION_DB, ResamplerDesign, StreamResampler, resample


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


@pytest.mark.parametrize(
    "in_rate_hz,out_rate_hz", [(48000, 16000), (44100, 16000), (8000, 16000), (44101, 16000)]
)
@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40).filter(lambda s: any(s)))
def test_chunked_equals_one_shot(in_rate_hz: int, out_rate_hz: int, sizes: list[int]) -> None:
    audio = seeded_audio(in_rate_hz // 2, seed=in_rate_hz)  # 0.5 s
    expected = resample(audio, in_rate_hz, out_rate_hz)
    got = stream_in_chunks(StreamResampler(in_rate_hz, out_rate_hz, 1), audio, sizes)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (-(-len(audio) * out_rate_hz // in_rate_hz),)
    np.testing.assert_array_equal(got, expected)


def test_one_sample_chunks_are_exact() -> None:
    audio = seeded_audio(4410, seed=3)
    expected = resample(audio, 44100, 16000)
    got = stream_in_chunks(StreamResampler(44100, 16000, 1), audio, [1])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("in_rate_hz", [44100, 48000, 8000])
@pytest.mark.parametrize("frame_ms", [20, 100])
def test_nothing_is_held_back(in_rate_hz: int, frame_ms: int) -> None:
    """After each chunk, every output sample up to the chunk's last input sample's time is out."""
    rs = StreamResampler(in_rate_hz, 16000, 1)
    step = in_rate_hz * frame_ms // 1000
    audio = seeded_audio(10 * step, seed=1)
    n_out = 0
    for k in range(step, len(audio) + 1, step):
        n_out += len(rs.process(audio[k - step : k]))
        assert n_out == -(-k * 16000 // in_rate_hz)
    assert rs.flush().shape == (0,)


@pytest.mark.parametrize("in_rate_hz", [44100, 48000, 96000])
def test_pass_band_flat_and_stop_band_attenuated(in_rate_hz: int) -> None:
    t = np.arange(in_rate_hz) / in_rate_hz

    def gain_db(f_hz: float) -> float:
        y = resample(np.sin(2 * np.pi * f_hz * t).astype(np.float32), in_rate_hz, 16000)[1000:-200]
        return float(20 * np.log10(np.sqrt(2) * np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12))

    for f_hz in (100.0, 1000.0, 4000.0, 7000.0):  # pass band: to 0.9 of 8 kHz
        assert abs(gain_db(f_hz)) < 0.05, f_hz
    for f_hz in (8500.0, 12000.0, 20000.0):  # would alias into 0..8 kHz
        assert gain_db(f_hz) < -(ATTENUATION_DB - 10), f_hz


def test_group_delay_is_half_the_filter() -> None:
    """An impulse comes out centred ``delay_s`` later (the causal filter's only cost)."""
    d = ResamplerDesign.of(48000, 16000)
    x = np.zeros(48000, np.float32)
    x[24000] = 1.0
    y = resample(x, 48000, 16000)
    assert abs(int(np.argmax(np.abs(y))) / 16000 - (0.5 + d.delay_s)) <= 1 / 16000
    assert d.delay_s < 0.004


def test_stereo_mixdown_then_resample() -> None:
    stereo = seeded_audio(48000, channels=2, seed=5)
    stereo[:, 1] *= -0.5  # make the channels differ a lot
    mono = stereo.mean(axis=1, dtype=np.float32)
    expected = resample(mono, 48000, 16000)
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
