"""Incremental log-mel equals the whole-window reference LogMel(fit_window(audio so far)) at every window end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.models.features import FeatureConfig, LogMel
from emostream.models.windows import fit_window
from emostream.streamer.core.frames import FrameRing, IncrementalLogMel, StreamFrames
from emostream.streamer.core.ring import RingBuffer
from emostream.streamer.core.windower import Windower

TOL = 1e-5
SMALL = FeatureConfig(window_s=0.5)  # 8000-sample windows, 47 frames: fast enough for hypothesis

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference(cfg: FeatureConfig, audio: np.ndarray, end: int) -> np.ndarray:
    window = fit_window(audio[max(0, end - cfg.window_samples) : end], cfg.window_samples)
    with torch.inference_mode():
        return LogMel(cfg)(torch.from_numpy(window)[None]).numpy()[0]


def signal(n: int, seed: int) -> np.ndarray:
    """Seeded noise with loud and silent stretches (silence hits the log floor)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32) * 0.1
    envelope = np.repeat(rng.uniform(0.0, 1.0, size=n // 1000 + 1) > 0.3, 1000)[:n]
    return x * envelope


def test_frame_ring_keeps_newest_in_order() -> None:
    ring = FrameRing(2, 4)
    ring.push(np.arange(6, dtype=np.float32).reshape(1, 6).repeat(2, 0)[:, :3])
    assert ring.count == 3
    ring.push(np.array([[3, 4, 5], [3, 4, 5]], dtype=np.float32))
    assert ring.count == 4
    np.testing.assert_array_equal(ring.last(4)[0], [2, 3, 4, 5])
    ring.push(np.arange(10, 20, dtype=np.float32).reshape(1, 10).repeat(2, 0))  # longer than capacity
    np.testing.assert_array_equal(ring.last(4)[1], [16, 17, 18, 19])
    np.testing.assert_array_equal(ring.last(2)[0], [18, 19])
    ring.reset()
    assert ring.count == 0
    with pytest.raises(ValueError):
        ring.last(1)


def run_stream(
    cfg: FeatureConfig, audio: np.ndarray, hop: int, chunks: list[int], lags: list[int], keep_all: bool = True
) -> list[tuple[int, np.ndarray, bool]]:
    """Push ``audio`` in ``chunks`` through ring + windower; compute the due windows after ``lags`` pushes."""
    ring = RingBuffer(len(audio) + 1)
    windower = Windower(cfg.window_samples, hop)
    state = StreamFrames(cfg)
    feats = IncrementalLogMel(cfg)
    pending: list[int] = []
    out = []
    pos = 0
    i = 0
    while pos < len(audio):
        n = chunks[i % len(chunks)]
        chunk = audio[pos : pos + n]
        pos += len(chunk)
        ring.push(chunk)
        pending += windower.push(len(chunk))
        if lags[i % len(lags)] == 0 or pos >= len(audio):
            todo = pending if keep_all else pending[-1:]
            for end in todo:
                req = state.request(end)
                out.append(
                    (
                        end,
                        feats.compute([state], [req], [ring.read_range(req.start_sample, end)])[0],
                        req.incremental,
                    )
                )
            pending = []
        i += 1
    for end in windower.flush():
        req = state.request(end)
        out.append(
            (end, feats.compute([state], [req], [ring.read_range(req.start_sample, end)])[0], req.incremental)
        )
    return out


@settings(max_examples=25, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 5000), min_size=1, max_size=8),
    lags=st.lists(st.integers(0, 3), min_size=1, max_size=5),
    hop_frames=st.sampled_from([3, 10, 25]),
    n=st.integers(100, 30000),
    seed=st.integers(0, 2**16),
    keep_all=st.booleans(),
)
def test_incremental_equals_whole_window(
    chunks: list[int], lags: list[int], hop_frames: int, n: int, seed: int, keep_all: bool
) -> None:
    cfg = SMALL
    audio = signal(n, seed)
    for end, window, _ in run_stream(cfg, audio, hop_frames * cfg.hop_samples, chunks, lags, keep_all):
        assert window.shape == (cfg.n_mels, cfg.n_frames)
        np.testing.assert_allclose(window, reference(cfg, audio, end), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "cfg, hop",
    [
        (FeatureConfig(window_s=0.505), 1600),  # window not a multiple of the frame hop: shifted grid
        (SMALL, 1000),  # hop not a multiple of the frame hop: every window from scratch, still exact
        (FeatureConfig(window_s=0.5, n_fft=400, stft_win_samples=400, window="hamming", log_kind="db"), 800),
    ],
)
def test_other_grids(cfg: FeatureConfig, hop: int) -> None:
    audio = signal(20000, 7)
    results = run_stream(cfg, audio, hop, [333, 2048, 17], [0, 1])
    for end, window, _ in results:
        np.testing.assert_allclose(window, reference(cfg, audio, end), atol=TOL, rtol=0)
    if hop % cfg.hop_samples == 0:
        assert any(incremental for _, _, incremental in results)


def test_default_config_switches_to_incremental_after_one_window() -> None:
    cfg = FeatureConfig()  # 5 s windows, 497 frames: the shipped setting
    hop = 16000
    audio = signal(8 * 16000 + 1234, 3)
    results = run_stream(cfg, audio, hop, [16000 * 3 // 4], [0])
    assert [end for end, _, _ in results] == [*range(hop, len(audio) + 1, hop), len(audio)]
    for end, window, incremental in results:
        # start-up (end < window) and the flush window (off the hop grid) come from scratch
        assert incremental == (end >= cfg.window_samples and end % hop == 0)
        np.testing.assert_allclose(window, reference(cfg, audio, end), atol=TOL, rtol=0)


def test_batched_across_streams_equals_one_by_one() -> None:
    cfg = SMALL
    hop = 1600
    audios = [signal(12000 + 1000 * k, 100 + k) for k in range(4)]
    states = [StreamFrames(cfg) for _ in audios]
    feats = IncrementalLogMel(cfg)
    for end in range(hop, 12001, hop):
        reqs = [s.request(end) for s in states]
        windows = feats.compute(
            states, reqs, [a[r.start_sample : r.end_sample] for a, r in zip(audios, reqs, strict=True)]
        )
        for a, w in zip(audios, windows, strict=True):
            np.testing.assert_allclose(w, reference(cfg, a, end), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="only one window"):
        feats.compute([states[0], states[0]], [states[0].request(13600)] * 2, [audios[0][:0]] * 2)


def test_gap_in_history_falls_back_to_scratch() -> None:
    cfg = SMALL
    audio = signal(40000, 11)
    state = StreamFrames(cfg)
    feats = IncrementalLogMel(cfg)
    for end in (1600, 3200, 30000, 31600):  # a jump of more than a window: history cannot cover it
        req = state.request(end)
        if end == 30000:
            assert not req.incremental
        if end == 31600:
            assert req.incremental
        window = feats.compute([state], [req], [audio[req.start_sample : end]])[0]
        np.testing.assert_allclose(window, reference(cfg, audio, end), atol=TOL, rtol=0)


@pytest.mark.parametrize("end", [1, 160, 511, 512, 513, 672, 833, 16000, 79999])
def test_start_up_window_skips_only_all_zero_frames(end: int) -> None:
    """Start-up windows fill the frames wholly in the zero padding instead of computing them: same values."""
    cfg = FeatureConfig()
    audio = signal(end, 11) + 0.01  # no exact zeros in the audio itself
    ilm = IncrementalLogMel(cfg)
    state = StreamFrames(cfg)
    window = ilm.window(state, end, lambda a, b: audio[a:b])
    ref = reference(cfg, audio, end)
    np.testing.assert_allclose(window, ref, atol=TOL, rtol=0)
    skipped = ilm._silent_frames(end)
    pad = cfg.window_samples - end
    all_zero = sum(1 for j in range(cfg.n_frames) if j * cfg.hop_samples + cfg.n_fft <= pad)
    assert skipped == min(all_zero, cfg.n_frames - 1)  # the last frame is always computed
    np.testing.assert_array_equal(window[:, :skipped], ref[:, :skipped])  # log of the floor, exactly
