"""Log-mel features against librosa, batching and locality properties, FeatureConfig checks, window policy."""

from __future__ import annotations

import math
from collections.abc import Iterator

import librosa
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.models.features import FeatureConfig, LogMel, analysis_window, log_mel, mel_filterbank
from emostream.models.windows import fit_window, stream_windows, window_ends

# Our float32 torch log-mel against librosa's (float32 input, numpy FFT), natural log: the largest
# difference found was ~9e-6 (hann/hamming/rectangular, n_fft 512/1024); allowed: 5e-5, i.e. the
# power spectra agree to 0.005 %.
LIBROSA_LOG_TOL = 5e-5
LIBROSA_WINDOW = {"hann": "hann", "hamming": "hamming", "rectangular": "boxcar"}

PANNS_32K = FeatureConfig(
    sample_rate_hz=32000, n_fft=1024, stft_win_samples=1024, hop_samples=320, n_mels=64, f_min_hz=50.0,
    f_max_hz=14000.0,
)
PANNS_16K = FeatureConfig(
    sample_rate_hz=16000, n_fft=512, stft_win_samples=512, hop_samples=160, n_mels=64, f_min_hz=50.0, f_max_hz=8000.0
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: as fast for these sizes, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def speechlike(n_samples: int, sample_rate_hz: int, seed: int = 0) -> np.ndarray:
    """Seeded noise + two tones, with a very quiet stretch and a silent one (mel energies at the floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate_hz
    y = 0.05 * rng.standard_normal(n_samples) + 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    q = n_samples // 4
    y[q : 2 * q] *= 1e-3
    y[2 * q : 2 * q + q // 2] = 0.0
    return y.astype(np.float32)


@pytest.mark.parametrize("cfg", [FeatureConfig(), PANNS_32K, PANNS_16K], ids=["default", "panns32k", "panns16k"])
def test_mel_filterbank_equals_librosa_slaney(cfg: FeatureConfig) -> None:
    ours = mel_filterbank(cfg).numpy().T  # (n_mels, n_freqs)
    ref = librosa.filters.mel(
        sr=cfg.sample_rate_hz, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min_hz, fmax=cfg.f_max_hz,
        dtype=np.float64,
    )
    assert ours.shape == ref.shape == (cfg.n_mels, cfg.n_freqs)
    np.testing.assert_array_equal(ours > 0, ref > 0)  # same support: no filter shifted by a bin
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * ref.max())


@pytest.mark.parametrize("window", ["hann", "hamming", "rectangular"])
@pytest.mark.parametrize("n_fft,stft_win_samples", [(512, 400), (1024, 1024)])
def test_log_mel_equals_librosa(window: str, n_fft: int, stft_win_samples: int) -> None:
    cfg = FeatureConfig(window=window, n_fft=n_fft, stft_win_samples=stft_win_samples)
    y = speechlike(cfg.sample_rate_hz, cfg.sample_rate_hz)
    ours = LogMel(cfg)(torch.from_numpy(y)[None])[0].numpy()
    power = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate_hz, n_fft=cfg.n_fft, hop_length=cfg.hop_samples, win_length=cfg.stft_win_samples,
        window=LIBROSA_WINDOW[window], center=False, power=2.0, n_mels=cfg.n_mels, fmin=cfg.f_min_hz,
        fmax=cfg.f_max_hz,
    )
    ref = np.log(np.maximum(power, cfg.log_floor))
    assert ours.shape == ref.shape == (cfg.n_mels, cfg.frames_for(len(y)))
    assert (ref == math.log(cfg.log_floor)).mean() > 0.1  # the floor is exercised
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LIBROSA_LOG_TOL)


def test_window_types_differ_and_are_padded_centred() -> None:
    hann, hamming, rect = (analysis_window(FeatureConfig(window=w)) for w in ("hann", "hamming", "rectangular"))
    assert hann.shape == (512,)
    left = (512 - 400) // 2
    assert torch.all(rect[:left] == 0) and torch.all(rect[left + 400 :] == 0) and torch.all(rect[left : left + 400] == 1)
    assert hann[left].item() == 0.0 and hamming[left].item() == pytest.approx(0.08)
    assert not torch.allclose(hann, hamming)


def test_db_is_scaled_ln() -> None:
    y = torch.from_numpy(speechlike(8000, 16000))[None]
    ln = LogMel(FeatureConfig())(y)
    db = LogMel(FeatureConfig(log_kind="db"))(y)
    torch.testing.assert_close(db, ln * (10.0 / math.log(10.0)))


def batch_of_audio(n: int, n_samples: int = 12000) -> torch.Tensor:
    return torch.from_numpy(np.stack([speechlike(n_samples, 16000, seed=i) for i in range(n)]))


def test_batched_equals_one_by_one() -> None:
    lm = LogMel(FeatureConfig())
    x = batch_of_audio(6)
    batched = lm(x)
    one_by_one = torch.cat([lm(x[i : i + 1]) for i in range(len(x))])
    assert batched.shape == (6, 64, FeatureConfig().frames_for(12000))
    assert torch.equal(batched, one_by_one)


def test_identical_across_batch_sizes() -> None:
    lm = LogMel(FeatureConfig())
    x = batch_of_audio(8)
    full = lm(x)
    for size in (1, 2, 3, 5, 7):
        for start in range(0, 8 - size + 1, 2):
            assert torch.equal(lm(x[start : start + size]), full[start : start + size]), (size, start)


def test_a_frame_depends_only_on_its_own_samples() -> None:
    cfg = FeatureConfig()
    lm = LogMel(cfg)
    x = batch_of_audio(1, 16000)
    k = 40
    start, end = k * cfg.hop_samples, k * cfg.hop_samples + cfg.n_fft
    changed = x.clone()
    changed[:, :start] *= 20.0  # a loud onset before the frame: per-clip normalisation would shift it
    changed[:, end:] = torch.randn(1, x.shape[1] - end, generator=torch.Generator().manual_seed(1))
    before, after = lm(x), lm(changed)
    assert torch.equal(after[:, :, k], before[:, :, k])
    # frames overlapping the changed audio do change (the comparison above can fail)
    assert not torch.allclose(after[:, :, k - 1], before[:, :, k - 1])
    assert not torch.allclose(after[:, :, k + 1], before[:, :, k + 1])


def test_log_mel_rejects_bad_input() -> None:
    cfg = FeatureConfig()
    fb, win = mel_filterbank(cfg), analysis_window(cfg)
    with pytest.raises(ValueError, match="batch, samples"):
        log_mel(torch.zeros(1000), fb, win, cfg.n_fft, cfg.hop_samples, cfg.log_floor)
    with pytest.raises(ValueError, match="n_fft"):
        log_mel(torch.zeros(1, cfg.n_fft - 1), fb, win, cfg.n_fft, cfg.hop_samples, cfg.log_floor)
    silent = log_mel(torch.zeros(2, cfg.n_fft), fb, win, cfg.n_fft, cfg.hop_samples, cfg.log_floor)
    assert silent.shape == (2, 64, 1)
    assert torch.all(silent == math.log(cfg.log_floor))


def test_feature_config_derived_sizes() -> None:
    cfg = FeatureConfig()
    assert cfg.window_samples == 80000
    assert cfg.n_frames == 1 + (80000 - 512) // 160 == 497
    assert cfg.n_freqs == 257
    assert cfg.frames_for(511) == 0 and cfg.frames_for(512) == 1 and cfg.frames_for(512 + 159) == 1
    assert cfg.frames_for(512 + 160) == 2
    assert cfg.hop_frames(1600) == 10
    with pytest.raises(ValueError, match="not a multiple"):
        cfg.hop_frames(1000)
    assert PANNS_32K.window_samples == 160000 and PANNS_32K.n_frames == 1 + (160000 - 1024) // 320


def test_feature_config_round_trip() -> None:
    cfg = FeatureConfig(window="hamming", n_mels=40, f_max_hz=7600.0, window_s=3.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown feature settings"):
        FeatureConfig.from_dict({**cfg.to_dict(), "n_mfcc": 13})


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"window_s": 5.00001}, "whole number of samples"),
        ({"sample_rate_hz": 22050, "window_s": 0.1234567}, "whole number of samples"),
        ({"window": "blackman"}, "window must be one of"),
        ({"log_kind": "log10"}, "log_kind"),
        ({"stft_win_samples": 600}, "stft_win_samples"),
        ({"stft_win_samples": 0}, "stft_win_samples"),
        ({"f_max_hz": 8001.0}, "f_max_hz"),
        ({"f_min_hz": 8000.0}, "f_min_hz"),
        ({"f_min_hz": -1.0}, "f_min_hz"),
        ({"log_floor": 0.0}, "log_floor"),
        ({"hop_samples": 0}, "positive"),
        ({"n_mels": 0}, "positive"),
        ({"window_s": 0.01}, "at least one FFT frame"),
    ],
)
def test_feature_config_rejects_bad_settings(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureConfig(**bad)


# ----------------------------------------------------------------------------- windows


def test_fit_window_keeps_the_end_and_right_aligns_short_audio() -> None:
    audio = np.arange(1, 11, dtype=np.float64)
    np.testing.assert_array_equal(fit_window(audio, 4), [7, 8, 9, 10])
    np.testing.assert_array_equal(fit_window(audio, 13), [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(fit_window(audio, 10), audio)
    np.testing.assert_array_equal(fit_window(np.zeros(0), 3), [0, 0, 0])
    assert fit_window(audio, 4).dtype == np.float32
    with pytest.raises(ValueError, match="mono"):
        fit_window(np.zeros((2, 10)), 4)
    with pytest.raises(ValueError, match="positive"):
        fit_window(audio, 0)


def test_window_ends() -> None:
    assert window_ends(1000, 300) == [300, 600, 900, 1000]
    assert window_ends(900, 300) == [300, 600, 900]
    assert window_ends(100, 300) == [100]
    assert window_ends(0, 300) == []
    with pytest.raises(ValueError, match="positive"):
        window_ends(100, 0)


@settings(max_examples=60, deadline=None)
@given(n_samples=st.integers(1, 5000), hop=st.integers(1, 1200))
def test_window_ends_properties(n_samples: int, hop: int) -> None:
    ends = window_ends(n_samples, hop)
    assert ends[-1] == n_samples
    assert ends == sorted(set(ends))
    assert all(e % hop == 0 for e in ends[:-1])
    assert len(ends) == math.ceil(n_samples / hop)


@settings(max_examples=40, deadline=None)
@given(n_samples=st.integers(1, 3000), hop=st.integers(1, 700), window=st.integers(1, 1500))
def test_stream_windows_are_the_padded_history_up_to_each_end(n_samples: int, hop: int, window: int) -> None:
    audio = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    ends, windows = stream_windows(audio, window, hop)
    assert ends == window_ends(n_samples, hop)
    assert windows.shape == (len(ends), window) and windows.dtype == np.float32
    for end, row in zip(ends, windows, strict=True):
        heard = min(end, window)
        np.testing.assert_array_equal(row[window - heard :], audio[end - heard : end])
        assert not row[: window - heard].any()


def test_older_model_files_setting_names_still_load() -> None:
    from emostream.models.features import FeatureConfig as FC

    old = {**FC().to_dict(), "win_samples": 320}
    del old["stft_win_samples"]
    assert FC.from_dict(old).stft_win_samples == 320
