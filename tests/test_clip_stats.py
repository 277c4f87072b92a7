"""`clip_stats` (the statistics baseline as a streaming model) and ensembles that mix pitch and mel-only members.

What the statistics measure (padding left out, pitch of a harmonic tone, voicing of noise), that a gain
changes no backend's output, that the fit on window statistics learns held-out speakers of the synthetic
corpus, that a fitted bag of hidden-layer heads gives the mean of its heads on every backend, and that an
ensemble of a mel-only deep model and a pitch-row statistics model is the mean of the two on every backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.arch import build_model, uses_pitch
from emostream.models.arch.clip_stats import (
    DENOISE_ESTIMATES,
    WindowStatistics,
    cepstral_basis,
    masked_quantiles,
    n_statistics,
)
from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import DB_TO_LN
from emostream.models.ensemble import combine, write_ensemble
from emostream.models.features import FeatureConfig, LogMel
from emostream.models.modelfile import (
    ModelSpec,
    export_model,
    load_checkpoint,
    load_classifier,
    save_checkpoint,
)
from emostream.train.augment import AugmentConfig, Augmenter
from emostream.train.baseline import LogisticBaseline
from emostream.train.dataset import TrainWindows, WindowConfig
from emostream.train.loop import train
from emostream.train.statsfit import (
    MLP_EPOCHS,
    WEIGHT_DECAYS,
    BaggedMLP,
    candidates,
    load_fit,
    mean_corpus_ua,
    speaker_folds,
    training_rows,
)
from tests.test_train_pipeline import FEATURES, config, write_corpus

SR = 16000
FC = FeatureConfig(pitch=True, log_floor=1e-14)
M = FC.n_mels
LABELS = ("angry", "happy", "neutral", "sad")
MODEL_FILES = (("onnx", "model.onnx"), ("torchscript", "model.ts"), ("eager", "checkpoint.pt"))


def voice(
    seconds: float, f0: float = 150.0, seed: int = 0, bursts_per_s: float = 3.0
) -> np.ndarray:
    """Syllable-like bursts (``bursts_per_s``) of a harmonic voice with a slow vibrato, at -20 dBFS peak or
    so, over a faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    freq = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * bursts_per_s * t), 0.0, None) ** 0.5
    return (0.05 * x * envelope + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)


def window(clip: np.ndarray, pad_samples: int) -> np.ndarray:
    """The clip end-aligned after ``pad_samples`` of zeros (a streamer start-up window)."""
    return np.concatenate([np.zeros(pad_samples, np.float32), clip])


def stats_of(waves: list[np.ndarray], **settings: object) -> torch.Tensor:
    module = WindowStatistics(M, True, **{"floor_db": 60.0, "active_db": 30.0, **settings})  # type: ignore[arg-type]
    with torch.no_grad():
        return torch.cat([module(LogMel(FC)(torch.from_numpy(w)[None])) for w in waves])


def test_statistics_leave_out_the_padding() -> None:
    """The same 2.5-s clip after 2.5 s or after 1 s of zeros (a whole number of hops): the same statistics."""
    clip = voice(2.5)
    hop = FC.hop_samples
    a, b = stats_of([window(clip, 250 * hop), window(clip, 100 * hop)])
    assert a.shape == (n_statistics(M, True),)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # and the padding would have mattered: the same clip with its zeros replaced by quiet noise differs
    noisy = window(clip, 250 * hop)
    noisy[: 250 * hop] = 1e-3 * np.random.default_rng(1).standard_normal(250 * hop)
    assert (stats_of([noisy])[0] - a).abs().max() > 0.05


def test_pitch_statistics_follow_the_voice() -> None:
    """A 150-Hz voice: voiced share near 1, mean log2(F0/200) near log2(0.75); white noise: not voiced."""
    tone = stats_of([voice(4.0, f0=150.0)])[0]
    noise = stats_of([(0.05 * np.random.default_rng(2).standard_normal(4 * SR)).astype(np.float32)])[0]
    base = 3 * M + 6
    assert tone[base] > 0.8 and noise[base] < 0.2  # voiced share of the active frames
    assert abs(float(tone[base + 1]) - np.log2(150 / 200)) < 0.05  # voiced mean of log2(F0 / 200 Hz)
    low = stats_of([voice(4.0, f0=110.0)])[0]
    assert float(low[base + 1]) < float(tone[base + 1]) - 0.35  # 110 Hz is 0.45 octaves below 150 Hz


def test_f0_relative_drops_the_voices_height_and_keeps_its_movement() -> None:
    """``f0_relative``: one statistic fewer (no voiced mean of log2 F0), the 10th and 90th percentiles
    relative to it. The same voice at 110 and 150 Hz: the absolute statistics tell them apart by 0.45
    octaves, the relative ones by almost nothing; a voice with a wider vibrato still differs. Refused
    without the pitch rows."""
    base = 3 * M + 6
    absolute = stats_of([voice(4.0, f0=110.0), voice(4.0, f0=150.0)], extended=True, dynamics=True)
    relative = stats_of([voice(4.0, f0=110.0), voice(4.0, f0=150.0)], extended=True, dynamics=True, f0_relative=True)
    assert relative.shape[1] == absolute.shape[1] - 1 == n_statistics(M, True, True, True, f0_relative=True)
    torch.testing.assert_close(relative[:, :base + 1], absolute[:, :base + 1])  # mel and level as before
    assert float(absolute[1, base + 3] - absolute[0, base + 3]) > 0.35  # the 10th percentile, absolute
    assert float((relative[1, base + 2 : base + 4] - relative[0, base + 2 : base + 4]).abs().max()) < 0.03
    torch.testing.assert_close(relative[:, base + 1], absolute[:, base + 2])  # the F0 spread, as before
    torch.testing.assert_close(relative[:, base + 4 :], absolute[:, base + 5 :])  # everything after, as before
    rng = np.random.default_rng(4)
    t = np.arange(4 * SR) / SR
    phase = 2 * np.pi * np.cumsum(150.0 * (1 + 0.15 * np.sin(2 * np.pi * 5 * t))) / SR
    wide = 0.05 * sum(np.sin(k * phase) / k for k in range(1, 12)) * np.clip(np.sin(2 * np.pi * 3.0 * t), 0.0, None) ** 0.5
    wide = (wide + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)
    moving = stats_of([voice(4.0, f0=150.0), wide], extended=True, dynamics=True, f0_relative=True)
    assert float(moving[1, base + 3] - moving[0, base + 3]) > 0.1  # the 90th percentile over the mean grows
    with pytest.raises(ValueError, match="f0_relative needs the pitch rows"):
        WindowStatistics(M, False, 60.0, 30.0, f0_relative=True)


def test_masked_quantiles() -> None:
    x = torch.tensor([[5.0, 1.0, 3.0, 100.0, 2.0], [7.0, 7.0, 7.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = masked_quantiles(x, mask, [0.0, 0.5, 1.0])
    torch.testing.assert_close(got, torch.tensor([[1.0, 3.0, 5.0], [0.0, 0.0, 0.0]]))  # 100 is masked out


def glide(seconds: float, f0_start: float, octaves_per_s: float) -> np.ndarray:
    """Syllable-like bursts of a harmonic voice whose F0 moves ``octaves_per_s`` octaves a second."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0_start * 2.0 ** (octaves_per_s * t)) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0.0, None) ** 0.5
    return (0.05 * x * envelope).astype(np.float32)


def test_extended_statistics_follow_the_others_and_measure_what_they_say() -> None:
    """``extended`` appends its statistics after the unchanged others; the F0 slope is a glide's octaves per
    second with its sign; a periodic voice is more periodic than noise; a gain changes none of them."""
    rising, falling = glide(3.0, 120.0, 0.3), glide(3.0, 300.0, -0.3)
    noise = (0.05 * np.random.default_rng(2).standard_normal(3 * SR)).astype(np.float32)
    waves = [window(w, SR) for w in (rising, falling, noise)]
    plain, ext = stats_of(waves), stats_of(waves, extended=True)
    n = n_statistics(M, True)
    assert ext.shape == (3, n_statistics(M, True, True)) and n_statistics(M, True, True) == n + M + 10
    torch.testing.assert_close(ext[:, :n], plain)
    slope, voiced_periodicity, periodicity = ext[:, -1], ext[:, -2], ext[:, -4]
    assert abs(float(slope[0]) - 0.3) < 0.06 and abs(float(slope[1]) + 0.3) < 0.06, slope
    assert float(periodicity[0]) > float(periodicity[2]) + 0.3 and float(voiced_periodicity[0]) > 0.7
    louder = stats_of([w * 10.0 for w in waves], extended=True)
    torch.testing.assert_close(louder, ext, atol=2e-3, rtol=1e-3)


def noise_bursts(seconds: float, bursts_per_s: float, seed: int = 0) -> np.ndarray:
    """Bursts of white noise (the positive half of each sine period), 40 dB quieter noise between them."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.maximum(np.clip(np.sin(2 * np.pi * bursts_per_s * t), 0.0, None) ** 0.5, 0.01)
    return (0.05 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def test_dynamics_follow_the_others_and_measure_what_they_say() -> None:
    """``dynamics`` appends its statistics after the unchanged extended ones. Noise bursts with quiet noise
    between them (present, not active): bursts per second, their length and the pause share follow the
    burst rate. Voice bursts: one voiced stretch per burst. A glide's F0 change over 250 ms is its rate
    times 0.25 s. A gain changes none of them."""
    waves = [window(noise_bursts(4.0, r, seed=i), SR) for i, r in enumerate((2.0, 5.0))]
    waves += [window(voice(4.0, f0=150.0, seed=1, bursts_per_s=r), SR) for r in (2.0, 5.0)]
    waves += [window(glide(2.0, f0, rate), SR) for f0, rate in ((150.0, 0.4), (100.0, 0.8))]
    ext, dyn = stats_of(waves, extended=True), stats_of(waves, extended=True, dynamics=True)
    n = n_statistics(M, True, True)
    assert dyn.shape == (6, n_statistics(M, True, True, True)) and dyn.shape[1] == n + 56
    torch.testing.assert_close(dyn[:, :n], ext)
    d = dyn[:, n:]
    bursts, length, pause, voiced_rate, voiced_length = d[:, 16], d[:, 17], d[:, 18], d[:, 47], d[:, 48]
    for i, rate in enumerate((2.0, 5.0)):
        assert abs(float(bursts[i]) - rate) < 0.3, bursts  # per second of present audio
        assert abs(float(length[i]) - 0.5 / rate) < 0.03, length  # seconds
        assert 0.35 < float(pause[i]) < 0.55, pause
        assert float(voiced_rate[i]) < 0.5  # noise is not voiced
        # the voice: nothing but its bursts is present, and each burst is one voiced stretch
        assert abs(float(voiced_rate[2 + i]) - float(bursts[2 + i])) < 0.05 * float(bursts[2 + i]), (voiced_rate, bursts)
        assert abs(float(voiced_length[2 + i]) - float(length[2 + i])) < 0.02, (voiced_length, length)
    assert float(bursts[3]) > 2 * float(bursts[2])
    f0_change_250ms = d[:, 54]  # mean |change of log2 F0| over 25 frames, voiced pairs
    assert abs(float(f0_change_250ms[4]) - 0.1) < 0.03, f0_change_250ms  # 0.4 octaves/s x 0.25 s
    assert abs(float(f0_change_250ms[5]) - 0.2) < 0.05, f0_change_250ms  # 0.8 octaves/s
    louder = stats_of([w * 10.0 for w in waves], extended=True, dynamics=True)
    torch.testing.assert_close(louder, dyn, atol=2e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="at least 4 mel bins"):
        WindowStatistics(3, True, 60.0, 30.0, dynamics=True)


def test_denoise_keeps_the_pauses_that_stationary_noise_fills() -> None:
    """Voice bursts at 2 and 4 per second over a faint room noise (40 dB below the bursts), and the same
    with white noise 10 dB below them. Without ``denoise`` every frame counts as active, so the burst rate
    says nothing; with it the burst rate follows the voice and the pause share stays put under the noise.
    A gain changes nothing, ``denoise`` 0 is the plain statistics, a factor or quiet share out of range is
    refused, and a quiet share of a tenth finds the same bursts."""
    rng = np.random.default_rng(3)
    clean, noisy = [], []
    for r in (2.0, 4.0):
        c = voice(4.0, f0=150.0, seed=1, bursts_per_s=r)
        speech_rms = float(np.sqrt(np.mean(np.square(c[np.abs(c) > 0.2 * np.abs(c).max()]))))
        for level_db, out in ((-40.0, clean), (-10.0, noisy)):
            out.append((c + speech_rms * 10 ** (level_db / 20) * rng.standard_normal(len(c))).astype(np.float32))
    waves = [window(c, SR) for c in clean + noisy]
    plain = stats_of(waves, extended=True, dynamics=True)
    denoised = stats_of(waves, extended=True, dynamics=True, denoise=2.0)
    assert denoised.shape == plain.shape and bool(torch.isfinite(denoised).all())
    bursts, pause = n_statistics(M, True, True) + 16, n_statistics(M, True, True) + 18
    for i, rate in enumerate((2.0, 4.0)):
        assert float(plain[2 + i, bursts]) < 1.0, plain[:, bursts]  # the noise made one long burst
        for j in (i, 2 + i):  # clean and noisy
            assert abs(float(denoised[j, bursts]) - rate) < 0.3, denoised[:, bursts]
        assert abs(float(denoised[2 + i, pause]) - float(denoised[i, pause])) < 0.1, denoised[:, pause]
        assert 0.3 < float(denoised[i, pause]) < 0.6, denoised[:, pause]
    louder = stats_of([w * 10.0 for w in waves], extended=True, dynamics=True, denoise=2.0)
    torch.testing.assert_close(louder, denoised, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(stats_of(waves, extended=True, dynamics=True, denoise=0.0), plain)
    with pytest.raises(ValueError, match="over-subtraction factor"):
        WindowStatistics(M, True, 60.0, 30.0, denoise=-1.0)
    with pytest.raises(ValueError, match="share of the frames"):
        WindowStatistics(M, True, 60.0, 30.0, denoise=1.0, denoise_quiet=1.0)
    # a smaller quiet share still finds the pauses of a voice that pauses half the time
    tenth = stats_of(waves, extended=True, dynamics=True, denoise=2.0, denoise_quiet=0.1)
    for i, rate in enumerate((2.0, 4.0)):
        assert abs(float(tenth[2 + i, bursts]) - rate) < 0.3, tenth[:, bursts]


def noise_estimate_db(wave: np.ndarray, estimate: str) -> float:
    """The level (dB, the features' scale) of ``WindowStatistics``' noise estimate for one window."""
    module = WindowStatistics(M, True, 60.0, 30.0, denoise=1.0, denoise_estimate=estimate)
    with torch.no_grad():
        level = module.noise_level(LogMel(FC)(torch.from_numpy(wave)[None]))
    return float(level[0]) / DB_TO_LN


def power_db(wave: np.ndarray) -> float:
    """The mean power (dB, the features' scale) over every bin and frame of a window."""
    from emostream.train.noisestudy import mean_power

    with torch.no_grad():
        return mean_power(LogMel(FC)(torch.from_numpy(wave)[None])[0, :M]) / DB_TO_LN


def test_log_noise_estimate_keeps_the_speech_out() -> None:
    """Speech that never pauses, with 0.2 s of room noise (30 dB down) before and after it: the quietest
    fifth of the frames is the room and a few of the weakest syllables. Their mean power is ruled by those
    syllables (more than 8 dB above the room); the mean of their log-mel (``denoise_estimate`` "log")
    stays within 4 dB of it. In white noise 10 dB under voice bursts both estimates find the noise within
    3 dB, and with the log estimate the burst rate still follows the voice; an unknown estimate is refused."""
    rng = np.random.default_rng(3)
    t = np.arange(int(2.5 * SR)) / SR
    phase = 2 * np.pi * np.cumsum(150.0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / SR
    envelope = 0.1 + 0.9 * np.clip(np.sin(2 * np.pi * 4 * t), 0.0, None) ** 0.5
    speech = (0.05 * sum(np.sin(k * phase) / k for k in range(1, 12)) * envelope).astype(np.float32)
    room = [(1e-3 * rng.standard_normal(int(0.2 * SR))).astype(np.float32) for _ in range(2)]
    murmur = (1e-3 * rng.standard_normal(len(speech))).astype(np.float32)
    clip = window(np.concatenate([room[0], speech + murmur, room[1]]), SR)
    room_db = power_db(np.concatenate(room))
    assert noise_estimate_db(clip, "mean") - room_db > 8.0
    assert abs(noise_estimate_db(clip, "log") - room_db) < 4.0
    bursts = voice(4.0, f0=150.0, seed=1, bursts_per_s=3.0)
    speech_rms = float(np.sqrt(np.mean(np.square(bursts[np.abs(bursts) > 0.2 * np.abs(bursts).max()]))))
    noise = (0.1 * speech_rms * rng.standard_normal(len(bursts)) * np.sqrt(10)).astype(np.float32)  # 10 dB down
    noise_db = power_db(noise)
    for estimate in DENOISE_ESTIMATES:
        assert abs(noise_estimate_db(window(bursts + noise, SR), estimate) - noise_db) < 3.0, estimate
    stats = stats_of([window(bursts + noise, SR)], extended=True, dynamics=True, denoise=1.5, denoise_estimate="log")
    assert abs(float(stats[0, n_statistics(M, True, True) + 16]) - 3.0) < 0.3, stats
    with pytest.raises(ValueError, match="denoise_estimate is one of mean, log"):
        WindowStatistics(M, True, 60.0, 30.0, denoise=1.0, denoise_estimate="median")


def test_ltas_cepstra_keep_the_tilt_and_drop_the_bins_detail() -> None:
    """``ltas_cepstra`` K: the first block is the DCT (rows 1..K) of the window's long-term spectrum
    instead of its n_mels bins, every other statistic as before. A tilt (a steady slope over the bins, what
    arousal moves) changes the first coefficient; a narrow notch in one bin, the kind of detail a
    microphone or a speaker's formants leave, moves the bins' block more than three times as far as the
    cepstra."""
    voices = [voice(3.0, f0=f, seed=i) for i, f in enumerate((120.0, 200.0))]
    full = stats_of(voices, extended=True, dynamics=True)
    short = stats_of(voices, extended=True, dynamics=True, ltas_cepstra=4)
    assert short.shape[1] == n_statistics(M, True, True, True, 4) == full.shape[1] - M + 4
    basis = cepstral_basis(M, 4)
    torch.testing.assert_close(short[:, :4], full[:, :M] @ basis.T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(short[:, 4:], full[:, M:])

    feats = LogMel(FC)(torch.from_numpy(voices[0])[None])
    tilted, notched = feats.clone(), feats.clone()
    tilted[:, :M] += torch.linspace(-1.0, 1.0, M)[None, :, None]  # about 8.7 dB across the range
    notched[:, 10] -= 2.0  # a bin the voice's harmonics fill (bins above the 60-dB floor)
    module = WindowStatistics(M, True, 60.0, 30.0, ltas_cepstra=4)
    bins = WindowStatistics(M, True, 60.0, 30.0)
    with torch.no_grad():
        base, tilt, notch = (module(f)[0, :4] for f in (feats, tilted, notched))
        bins_base, bins_notch = bins(feats)[0, :M], bins(notched)[0, :M]
    assert abs(float(tilt[0] - base[0])) > 3.0  # the slope lands in the first coefficient
    assert 0.0 < float((notch - base).norm()) < 0.3 * float((bins_notch - bins_base).norm())
    for bad in (-1, 13, 2.5, True, "4"):
        with pytest.raises(ValueError, match="ltas_cepstra is 0"):
            WindowStatistics(M, True, 60.0, 30.0, ltas_cepstra=bad)  # type: ignore[arg-type]


def test_voiced_ltas_is_the_vowels_spectrum_whatever_the_consonants() -> None:
    """``voiced_ltas``: n_mels more statistics after all the others (which stay as they were), the
    long-term spectrum of the voiced frames alone. Hiss bursts between the voice's syllables (active but
    unvoiced frames) move the all-active-frames spectrum (the first block) several times as far as the
    voiced one; without the pitch rows the setting is refused."""
    rng = np.random.default_rng(3)
    clean = voice(3.0, f0=140.0, seed=2, bursts_per_s=2.0)
    t = np.arange(len(clean)) / SR
    gaps = np.clip(-np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 0.5  # where the voice's bursts are not
    hissy = clean + (0.03 * gaps * rng.standard_normal(len(clean))).astype(np.float32)
    base = stats_of([clean, hissy], extended=True, dynamics=True)
    both = stats_of([clean, hissy], extended=True, dynamics=True, voiced_ltas=True)
    n = base.shape[1]
    assert both.shape[1] == n + M == n_statistics(M, True, True, True, voiced_ltas=True)
    torch.testing.assert_close(both[:, :n], base)
    voiced_change = float((both[1, n:] - both[0, n:]).abs().mean())
    all_change = float((base[1, :M] - base[0, :M]).abs().mean())
    assert 0.0 < 3.0 * voiced_change < all_change, (voiced_change, all_change)
    with pytest.raises(ValueError, match="voiced_ltas needs the pitch rows"):
        WindowStatistics(M, False, 60.0, 30.0, voiced_ltas=True)


def test_speaker_folds_keep_speakers_whole_and_spread_corpora() -> None:
    speakers = [f"a:{i % 7}" for i in range(70)] + [f"b:{i % 3}" for i in range(30)]
    corpora = ["a"] * 70 + ["b"] * 30
    folds = speaker_folds(speakers, corpora, k=5)
    by_speaker = {s: set(folds[[i for i, t in enumerate(speakers) if t == s]].tolist()) for s in set(speakers)}
    assert all(len(f) == 1 for f in by_speaker.values())  # a speaker is never split
    assert set(folds.tolist()) == set(range(5))
    b_folds = {next(iter(by_speaker[f"b:{i}"])) for i in range(3)}
    assert len(b_folds) == 3  # the small corpus's speakers land in three different folds
    assert set(speaker_folds(["x:1", "x:2"] * 3, ["x"] * 6, k=5).tolist()) == {0, 1}  # k capped at the speakers
    assert set(speaker_folds(["x:1"] * 4, ["x"] * 4).tolist()) == {0}


def test_mean_corpus_ua_averages_corpora_over_their_own_classes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    corpora = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    assert mean_corpus_ua(y, pred, corpora, 3) == pytest.approx(((0.5 + 1.0) / 2 + 0.5) / 2)


MLP_HEAD = {"hidden": 8, "heads": 3}


def statistics_settings(
    extended: bool, dynamics: bool, denoise: float = 0.0, estimate: str = "mean", ltas: int = 0, voiced: bool = False
) -> dict[str, object]:
    return {
        **({"extended": True} if extended else {}),
        **({"dynamics": True} if dynamics else {}),
        **({"denoise": denoise} if denoise else {}),
        **({"denoise_estimate": estimate} if estimate != "mean" else {}),
        **({"ltas_cepstra": ltas} if ltas else {}),
        **({"voiced_ltas": True} if voiced else {}),
    }


def fitted(
    seed: int = 0,
    pitch: bool = True,
    extended: bool = False,
    head: dict | None = None,
    dynamics: bool = False,
    denoise: float = 0.0,
    estimate: str = "mean",
    ltas: int = 0,
    voiced: bool = False,
) -> torch.nn.Module:
    """A clip_stats model with standardisation measured on a few voices and random weights (``head``: the
    bag's settings; the linear layer without)."""
    torch.manual_seed(seed)
    settings = {"pitch": pitch, **statistics_settings(extended, dynamics, denoise, estimate, ltas, voiced), **(head or {})}
    model = build_model(ModelConfig("clip_stats", len(LABELS), M, settings)).eval()
    waves = [voice(3.0, f0=f, seed=i, bursts_per_s=2.0 + i) for i, f in enumerate((110.0, 150.0, 220.0, 300.0))]
    s = stats_of(waves, **statistics_settings(extended, dynamics, denoise, estimate, ltas, voiced)) if pitch else None
    with torch.no_grad():
        if s is not None:
            model.get_buffer("mean").copy_(s.mean(0))
            model.get_buffer("scale").copy_(s.std(0) + 1e-3)
        if head:
            model.hidden.weight.normal_(0.0, 0.5)
            model.out_weight.normal_(0.0, 0.5)
        else:
            model.linear.weight.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize(
    ("extended", "dynamics", "head", "denoise", "estimate", "ltas"),
    [
        (False, False, None, 0.0, "mean", 0),
        (True, False, None, 0.0, "mean", 0),
        (True, False, MLP_HEAD, 0.0, "mean", 0),
        (True, True, MLP_HEAD, 0.0, "mean", 0),
        (True, True, MLP_HEAD, 2.0, "mean", 0),
        (True, True, MLP_HEAD, 1.5, "log", 0),
        (True, True, MLP_HEAD, 1.0, "mean", 4),
        (True, True, MLP_HEAD, 0.0, "mean", -1),  # -1: voiced_ltas
    ],
)
def test_no_backend_moves_with_a_gain_of_20_db(
    tmp_path: Path, extended: bool, dynamics: bool, head: dict | None, denoise: float, estimate: str, ltas: int
) -> None:
    """The exported statistics model gives the same probabilities at -20, 0 and +20 dB, on every backend
    (the statistics of models fitted before 2026-12-05, the extended ones, the extended ones through a
    bag of hidden-layer heads, with the dynamics, and with the noise subtracted first, its estimate the
    quiet frames' mean power or mean log-mel; the long-term spectrum as cepstra; the voiced frames'
    long-term spectrum added)."""
    voiced, ltas = ltas < 0, max(ltas, 0)
    model = fitted(
        extended=extended, head=head, dynamics=dynamics, denoise=denoise, estimate=estimate, ltas=ltas, voiced=voiced
    )
    settings = {"pitch": True, **statistics_settings(extended, dynamics, denoise, estimate, ltas, voiced), **(head or {})}
    spec = ModelSpec(FC, ModelConfig("clip_stats", len(LABELS), M, settings), LABELS)
    model_dir = export_model(save_checkpoint(tmp_path / "c.pt", model, spec), tmp_path / "model")
    clip = window(voice(3.5, f0=180.0, seed=5), SR)
    waves = np.stack([clip * g for g in (0.1, 1.0, 10.0)]).astype(np.float32)
    with torch.no_grad():
        feats = LogMel(FC)(torch.from_numpy(waves)).numpy()
    for backend, name in MODEL_FILES:
        probs = load_classifier(model_dir / name, backend=backend).predict(feats)
        assert np.ptp(probs[1]) > 0.05, backend  # not a flat output: the test can fail
        assert np.abs(probs - probs[1]).max() < 1e-3, (backend, probs)


def test_a_fitted_bag_in_the_model_file_gives_the_mean_of_its_heads(tmp_path: Path) -> None:
    """``BaggedMLP`` fitted on window statistics, copied into a clip_stats model with the same head settings:
    every backend gives the heads' mean probability as the bag itself computes it; a head of another kind
    or count is refused."""
    waves = np.stack([window(voice(2.5, f0=f, seed=i), 2 * SR) for i, f in enumerate((100.0, 140.0, 200.0, 260.0))])
    with torch.no_grad():
        feats = LogMel(FC)(torch.from_numpy(waves.astype(np.float32)))
    settings = {"pitch": True, "extended": True, **MLP_HEAD}
    model = build_model(ModelConfig("clip_stats", len(LABELS), M, settings)).eval()
    x = model.statistics(feats).detach().numpy()
    rng = np.random.default_rng(0)
    rows = np.concatenate([x + rng.normal(0, 0.1, x.shape) for _ in range(30)])  # 120 rows, 4 voices = 4 labels
    y = np.tile(np.arange(4), 30)
    bag = BaggedMLP(len(LABELS), MLP_HEAD["hidden"], MLP_HEAD["heads"], epochs=3, seed=2).fit(rows, y)
    load_fit(model, bag)
    expected = bag.predict_proba(x)
    assert np.ptp(expected, axis=1).min() > 0.01  # not flat: the comparison can fail
    spec = ModelSpec(FC, ModelConfig("clip_stats", len(LABELS), M, settings), LABELS)
    model_dir = export_model(save_checkpoint(tmp_path / "c.pt", model, spec), tmp_path / "model")
    for backend, name in MODEL_FILES:
        probs = load_classifier(model_dir / name, backend=backend).predict(feats.numpy())
        np.testing.assert_allclose(probs, expected, atol=2e-5, err_msg=backend)
    with pytest.raises(ValueError, match="does not match"):
        load_fit(model, LogisticBaseline(len(LABELS)).fit(rows, y))
    with pytest.raises(ValueError, match="does not match"):
        load_fit(model, BaggedMLP(len(LABELS), MLP_HEAD["hidden"], 2, epochs=1).fit(rows, y))
    with pytest.raises(ValueError, match="hidden must be"):
        build_model(ModelConfig("clip_stats", len(LABELS), M, {"hidden": -1}))


def test_the_speaker_adversary_generalises_past_a_speaker_shortcut() -> None:
    """``BaggedMLP(adversary=...)`` given each row's speaker. Training rows where the speakers are a
    shortcut: each of twelve speakers shifts eight statistics its own way, and half the speakers (shifted
    one way on the first of them) say class 0 nine times in ten, the other half class 1; two other
    statistics carry the class weakly. New speakers, shifted the same way but with balanced classes, are
    scored: the bag trained against a speaker classifier beats the plain bag there. Weight 0, or no
    speakers given, is the plain bag; a logistic head refuses an adversary."""

    def rows(rng: np.random.Generator, skew: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_speakers, per = 12, 150
        offsets = 2.0 * rng.normal(0.0, 1.0, (n_speakers, 8))
        offsets[:, 0] += np.where(np.arange(n_speakers) < n_speakers // 2, 2.0, -2.0)
        speaker = np.repeat(np.arange(n_speakers), per)
        p_one = np.where(np.arange(n_speakers) < n_speakers // 2, 1.0 - skew, skew)[speaker]
        y = (rng.random(len(speaker)) < p_one).astype(np.int64)
        x = rng.normal(0.0, 1.0, (len(speaker), 16))
        x[:, :2] += 0.7 * (2 * y[:, None] - 1)
        x[:, 2:10] += offsets[speaker]
        return x, y, speaker

    def ua(bag: BaggedMLP, x: np.ndarray, y: np.ndarray) -> float:
        pred = bag.predict_proba(x).argmax(1)
        return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))

    gains = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        (x, y, speaker), (x_new, y_new, _) = rows(rng, 0.9), rows(rng, 0.5)
        plain = BaggedMLP(2, 32, 2, 8, seed=1).fit(x, y, speaker)
        adversarial = BaggedMLP(2, 32, 2, 8, seed=1, adversary=1.0).fit(x, y, speaker)
        gains.append(ua(adversarial, x_new, y_new) - ua(plain, x_new, y_new))
        again = BaggedMLP(2, 32, 2, 8, seed=1).fit(x, y)  # no speakers: the same plain bag
        np.testing.assert_array_equal(again.predict_proba(x_new), plain.predict_proba(x_new))
    assert np.mean(gains) > 0.04 and min(gains) > 0.0, gains
    stats_model = build_model(ModelConfig("clip_stats", 2, M, {"pitch": False})).eval()
    with pytest.raises(ValueError, match="bag of heads"):
        candidates(stats_model, 2, 0, adversary=0.1)  # type: ignore[arg-type]


def test_mixed_ensemble_gives_the_mel_rows_to_the_mel_only_member(tmp_path: Path) -> None:
    """A deep model without pitch rows and a statistics model with them: one ensemble whose features have
    the pitch rows, equal on every backend to the mean of the members' probabilities; each member picked
    out of it (``PATH@I``) is that member again, with the feature rows it reads."""
    split = {"seed": 0, "test": ["c:3"], "val": ["c:2"], "train": ["c:0", "c:1"]}
    meta = {"split": split, "datasets": ["c"], "label_map": {}}
    deep_cfg = ModelConfig(
        "bandsplit_bilstm", len(LABELS), M,
        {"channels": [8, 16], "band_dim": 16, "lstm_hidden": 16, "input_norm": "cmn", "pooling": "masked_stats"},
    )
    torch.manual_seed(3)
    deep = build_model(deep_cfg).eval()
    deep_fc = FeatureConfig(log_floor=1e-14)
    a = save_checkpoint(tmp_path / "deep.pt", deep, ModelSpec(deep_fc, deep_cfg, LABELS, {**meta, "name": "deep"}))
    stats_cfg = ModelConfig("clip_stats", len(LABELS), M, {"pitch": True})
    b = save_checkpoint(tmp_path / "stats.pt", fitted(1), ModelSpec(FC, stats_cfg, LABELS, {**meta, "name": "stats"}))
    out = write_ensemble([a, b], tmp_path / "ens")
    spec = load_checkpoint(out / "checkpoint.pt").spec
    assert spec.feature_config.pitch and uses_pitch(spec.model_config)
    clips = [window(voice(2.0 + i, f0=120.0 + 60 * i, seed=i), (3 - i) * SR) for i in range(3)]
    with torch.no_grad():
        feats = LogMel(FC)(torch.from_numpy(np.stack(clips))).numpy()
    expected = (
        load_classifier(a, backend="eager").predict(feats[:, :M]) + load_classifier(b, backend="eager").predict(feats)
    ) / 2
    for backend, name in MODEL_FILES:
        np.testing.assert_allclose(load_classifier(out / name, backend=backend).predict(feats), expected, atol=2e-5,
                                   err_msg=backend)
    # each member picked out again is itself: the deep one without the pitch rows, the statistics with them
    for index, member_file, rows in ((0, a, feats[:, :M]), (1, b, feats)):
        alone = write_ensemble([f"{out}@{index}"], tmp_path / f"member{index}")
        assert load_checkpoint(alone / "checkpoint.pt").spec.feature_config.pitch == (index == 1)
        np.testing.assert_allclose(
            load_classifier(alone / "model.onnx", backend="onnx").predict(rows),
            load_classifier(member_file, backend="eager").predict(rows),
            atol=2e-5,
        )
    # other feature settings still have to agree
    other = save_checkpoint(
        tmp_path / "other.pt", fitted(1), ModelSpec(FeatureConfig(pitch=True, log_floor=1e-6), stats_cfg, LABELS, meta)
    )
    with pytest.raises(ValueError, match="feature settings differ"):
        combine([load_checkpoint(a), load_checkpoint(other)])


def test_warped_passes_keep_the_clean_rows_and_the_other_draws() -> None:
    """``p_warp`` in a ``clip_stats`` fit: the clean streamer windows' statistics are the same with and without
    it, every augmented window of the passes is warped (``p_warp`` 1), and the warp takes no draw from the
    passes' own random stream, so the windows cut, their level, noise and channel are the ones drawn without
    it: with the warp's range a single factor of 1, the rows equal the unwarped fit's."""
    clips = [voice(1.5 + 0.3 * i, f0=120.0 + 20 * i, seed=i) for i in range(6)]
    model = build_model(ModelConfig("clip_stats", 3, M, {"extended": True, "dynamics": True}))

    def rows(**augment: object) -> tuple[np.ndarray, np.ndarray, Augmenter]:
        augmenter = Augmenter(AugmentConfig(level_dbfs=(-40.0, -10.0), **augment), SR, seed=0)  # type: ignore[arg-type]
        windows = TrainWindows(clips, [0, 1, 2, 0, 1, 2], ["a", "a", "b", "b", "c", "c"], FC, WindowConfig(), augmenter)
        r = training_rows(model, LogMel(FC), windows, passes=2, seed=5, console=None)  # type: ignore[arg-type]
        return r.x[r.clean], r.x[~r.clean], augmenter

    clean, augmented, plain = rows()
    clean_w, warped, aug = rows(p_warp=1.0)
    np.testing.assert_array_equal(clean, clean_w)
    assert aug.stats["warp"] == len(warped) == 2 * len(clips) and "warp" not in plain.stats
    assert not np.allclose(augmented, warped, atol=1e-3)
    _, unit, _ = rows(p_warp=1.0, warp_range=(1.0, 1.0))
    np.testing.assert_array_equal(unit, augmented)
    assert {k: v for k, v in aug.stats.items() if k != "warp"} == dict(plain.stats)


def test_training_on_window_statistics_learns_held_out_speakers(tmp_path: Path) -> None:
    """`emostream train --arch clip_stats` on the synthetic three-emotion corpus of test_train_pipeline:
    the recipe's bag fitted per epoch count, cross-validation on the training actors picks one (the
    validation actors are scored for each), the exported model scores the test actors; with ``hidden`` 0
    the logistic regression is fitted per weight decay instead."""
    data = write_corpus(tmp_path / "data", takes=4)
    out = tmp_path / "run"
    report = train(config(data, out, tmp_path / "cache", arch="clip_stats", model_settings={},
                          feature_settings=FEATURES, epochs=1))
    assert report["datasets"]["ravdess"]["ua"] >= 0.8, report["datasets"]["ravdess"]["confusion"]  # chance 1/3
    history = report["train"]["history"]
    assert [h["mlp_epochs"] for h in history] == list(MLP_EPOCHS)
    kept = history[report["train"]["best_epoch"] - 1]
    assert kept["cv_ua"] == max(h["cv_ua"] for h in history) and all(0 <= h["cv_ua"] <= 1 for h in history)
    assert report["train"]["best_val_ua"] == kept["val_selected"]
    clf = load_classifier(out / "model")
    assert clf.model_config.settings == {"extended": True, "dynamics": True, "hidden": 64, "heads": 5}  # the recipe's
    assert clf.model_config.arch == "clip_stats" and clf.feature_config.pitch
    assert clf.feature_config.log_floor == 1e-14  # the window-relative floor alone acts, as for cmn models
    assert json.loads((out / "report.json").read_text())["train"]["epochs_run"] == len(MLP_EPOCHS)
    linear = train(config(data, tmp_path / "linear", tmp_path / "cache", arch="clip_stats",
                          model_settings={"hidden": 0}, feature_settings=FEATURES, epochs=1))
    assert [h["weight_decay"] for h in linear["train"]["history"]] == list(WEIGHT_DECAYS)
    assert linear["datasets"]["ravdess"]["ua"] >= 0.8, linear["datasets"]["ravdess"]["confusion"]
    # the speaker adversary: recorded per candidate and in the model file's training settings; it trains
    # clip_stats's bag only
    adv = train(config(data, tmp_path / "adv", tmp_path / "cache", arch="clip_stats", model_settings={},
                       feature_settings=FEATURES, epochs=1, adversary=0.3))
    assert [h["adversary"] for h in adv["train"]["history"]] == [0.3] * len(MLP_EPOCHS)
    assert load_classifier(tmp_path / "adv" / "model").spec.meta["train_config"]["adversary"] == 0.3
    assert adv["datasets"]["ravdess"]["ua"] >= 0.8, adv["datasets"]["ravdess"]["confusion"]
    with pytest.raises(ValueError, match="trains clip_stats's heads only"):
        train(config(data, tmp_path / "deep", tmp_path / "cache", adversary=0.3))
    with pytest.raises(ValueError, match="bag of heads"):
        train(config(data, tmp_path / "lin", tmp_path / "cache", arch="clip_stats", model_settings={"hidden": 0},
                     feature_settings=FEATURES, epochs=1, adversary=0.3))


def test_noise_study_reports_both_estimates_per_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m emostream.train.noisestudy`` on a synthetic corpus: one row per estimate with the clips it
    drew, and the log-mel mean never above the mean power (a geometric mean is at most the arithmetic
    one), so it sits at least as far under the speech."""
    from emostream.train.noisestudy import main

    write_corpus(tmp_path / "data", takes=1)
    argv = ["--data", str(tmp_path / "data"), "--datasets", "ravdess", "--clips", "4", "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [("ravdess", "4", e) for e in DENOISE_ESTIMATES]
    under = {r[2].strip(): float(r[3].split()[0]) for r in rows}
    errors = [float(r[4].split()[0]) for r in rows]
    assert under["log"] >= under["mean"] - 1e-6 and under["mean"] > 0.0, rows
    assert all(abs(e) < 10.0 for e in errors), rows


def test_bins_read_only_the_band_and_a_telephone_line_moves_them_less() -> None:
    """``bins`` [first, stop): the statistics of those mel bins alone (equal to a module of that many bins on
    the sliced features, pitch rows kept), so energy outside the band changes nothing. With the telephone
    band (bins 6-44 of the default features, 324-3271 Hz) a telephone line (300-3400 Hz, 8 kHz, mu-law)
    moves the statistics of voices (each in units of its spread over the clean voices) under a fifth as far as
    it moves every bin's (0.55 against 17.7 when written); bad bins are refused."""
    from emostream.train.perturb import telephone

    first, stop = 6, 45
    clips = [voice(3.0, f0=f, seed=i) for i, f in enumerate((120.0, 210.0))]
    feats = torch.cat([LogMel(FC)(torch.from_numpy(c)[None]) for c in clips])
    band = WindowStatistics(M, True, 60.0, 30.0, extended=True, dynamics=True, bins=(first, stop))
    sliced = WindowStatistics(stop - first, True, 60.0, 30.0, extended=True, dynamics=True)
    outside = feats.clone()
    outside[:, :first] += 2.0
    outside[:, stop:M] -= 3.0
    with torch.no_grad():
        got = band(feats)
        torch.testing.assert_close(got, sliced(torch.cat([feats[:, first:stop], feats[:, M:]], dim=1)))
        torch.testing.assert_close(band(outside), got)
    assert got.shape[1] == band.n_out == n_statistics(stop - first, True, True, True)

    full = WindowStatistics(M, True, 60.0, 30.0, extended=True, dynamics=True)
    many = [voice(3.0, f0=f, seed=i, bursts_per_s=b) for i, (f, b) in enumerate([(100 + 25 * i, 2 + i % 3) for i in range(8)])]
    phoned = [telephone(c, SR).astype(np.float32) for c in many]

    def shift(module: WindowStatistics) -> float:
        """The telephone line's mean move of each statistic, in units of its spread over the clean voices."""
        with torch.no_grad():
            clean = torch.cat([module(LogMel(FC)(torch.from_numpy(c)[None])) for c in many])
            line = torch.cat([module(LogMel(FC)(torch.from_numpy(c)[None])) for c in phoned])
        return float(((line - clean).abs().mean(0) / (clean.std(0) + 1e-3)).mean())

    full_shift, band_shift = shift(full), shift(band)
    assert band_shift < 0.2 * full_shift, (band_shift, full_shift)
    for bad in ((0, 3), (40, M + 1), (10, 10), (-1, 20)):
        with pytest.raises(ValueError, match="bins is"):
            WindowStatistics(M, True, 60.0, 30.0, bins=bad)
    for setting in ([5], "6-45", [6.0, 45], [True, 8]):
        with pytest.raises(ValueError, match="bins is null"):
            build_model(ModelConfig("clip_stats", 4, M, {"bins": setting}))


def test_line_telephone_sends_the_clean_rows_and_every_pass_through_the_line() -> None:
    """augment ``line: "telephone"`` (a member for narrowband windows): the clean rows are the statistics of
    each clip after the telephone line (then cut into the streamer's windows), every augmented window goes
    through it last, and the augmented rows differ from those without it; an unknown line is refused."""
    from emostream.train.dataset import clip_windows
    from emostream.train.perturb import telephone

    clips = [voice(1.5 + 0.3 * i, f0=120.0 + 20 * i, seed=i) for i in range(4)]
    model = build_model(ModelConfig("clip_stats", 3, M, {"extended": True, "dynamics": True}))

    def rows(source: list[np.ndarray] = clips, **augment: object) -> tuple[np.ndarray, np.ndarray, Augmenter]:
        augmenter = Augmenter(AugmentConfig(level_dbfs=(-40.0, -10.0), **augment), SR, seed=0)  # type: ignore[arg-type]
        windows = TrainWindows(source, [0, 1, 2, 0], ["a", "a", "b", "b"], FC, WindowConfig(), augmenter)
        r = training_rows(model, LogMel(FC), windows, passes=2, seed=5, console=None)  # type: ignore[arg-type]
        return r.x[r.clean], r.x[~r.clean], augmenter

    clean, augmented, _ = rows()
    clean_t, augmented_t, aug = rows(line="telephone")
    assert aug.stats["line"] == len(clips) + 2 * len(clips)  # every clip's clean windows and every pass's window
    expected = []
    for clip in clips:
        wins = clip_windows(telephone(clip, SR).astype(np.float32), FC)
        expected.append(model.statistics(LogMel(FC)(torch.from_numpy(wins))).detach().numpy())
    np.testing.assert_allclose(clean_t, np.concatenate(expected), rtol=1e-4, atol=1e-4)
    assert not np.allclose(clean, clean_t, atol=1e-2) and not np.allclose(augmented, augmented_t, atol=1e-2)
    # the training cache holds int16 audio: it reaches the line scaled to [-1, 1], as the float clips do
    pcm = [np.round(c * 32767).astype(np.int16) for c in clips]
    clean_pcm, _, _ = rows(pcm, line="telephone")
    quantised = float(np.abs(clean_pcm - clean_t).mean())  # 16-bit rounding moves the quietest statistics a little
    assert quantised < 0.1 * float(np.abs(clean - clean_t).mean()), quantised
    with pytest.raises(ValueError, match="line is null or one of telephone"):
        AugmentConfig(line="radio")
