"""Level invariance of the exported model on every backend, and the perturbations and augmentations that
train and test robustness: each changes the audio as its documentation states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from emostream.models.features import FeatureConfig, LogMel, mel_centres_hz
from emostream.models.modelfile import load_classifier, onnxruntime_available
from emostream.train.augment import AugmentConfig, Augmenter, mel_warp
from emostream.train.dataset import sampling_weights
from emostream.train.perturb import (
    Perturbation,
    active_rms,
    add_noise,
    apply_gain,
    band_limit,
    noise_bank,
    reverb,
    synthetic_rir,
    telephone,
)

SR = 16000
INVARIANCE_TOL = 1e-3
"""Largest change of any class probability allowed for a +-20 dB gain (float32 rounding only)."""


def speechlike(seconds: float = 2.5, seed: int = 0, level: float = 0.1) -> np.ndarray:
    """Syllable-like harmonic bursts with a gliding pitch and a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 160 * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x = x * np.clip(np.sin(2 * np.pi * 3.2 * t), 0, None)
    x = x + 0.003 * rng.standard_normal(n)
    return (level * x / np.abs(x).max()).astype(np.float32)


def spectrum_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-20)


BACKENDS = ["eager", "torchscript", *(["onnx"] if onnxruntime_available() else [])]


@pytest.fixture(scope="module")
def tiny_stats_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the spectral-statistics branch (``layers.SpectralStats``) into its head."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_stats"), settings={"spectral_stats": True})


@pytest.mark.parametrize("which", ["tiny", "tiny_stats", "shipped"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_model_output_does_not_move_with_gain(
    tiny_model_dir: Path, tiny_stats_model_dir: Path, backend: str, which: str
) -> None:
    path = {"tiny": tiny_model_dir, "tiny_stats": tiny_stats_model_dir}.get(which, "default")
    clf = load_classifier(path, backend=backend)
    fc = clf.feature_config
    logmel = LogMel(fc)
    window = np.zeros(fc.window_samples, np.float32)
    speech = speechlike(3.0)
    window[-len(speech) :] = speech  # a start-up window: 2 s of zero padding, then speech at about -25 dBFS
    base = clf.predict(logmel(torch.from_numpy(window)[None]))
    for gain_db in (-20.0, -10.0, 10.0, 20.0):
        scaled = window * np.float32(10 ** (gain_db / 20))
        probs = clf.predict(logmel(torch.from_numpy(scaled)[None]))
        assert np.abs(probs - base).max() < INVARIANCE_TOL, (backend, gain_db, probs, base)
    # what makes it so (test_batchnorm_model_moves_with_gain: without it, it moves): every deep model (the shipped
    # file is an ensemble) normalises its input with cmn; clip_stats measures the log-mel relative to the window
    cfg = clf.model_config
    members = cfg.settings["members"] if cfg.arch == "ensemble" else [{"arch": cfg.arch, "settings": cfg.settings}]
    for member in members:
        assert member["arch"] == "clip_stats" or member["settings"]["input_norm"] == "cmn", member


def test_spectral_stats_keep_the_envelope_that_cmn_removes() -> None:
    """A fixed spectral tilt is cancelled by per-bin normalisation (``WindowNorm`` cmn) but moves the
    envelope part of ``SpectralStats``; a gain moves neither; inactive frames (padding) count in neither."""
    from emostream.models.arch.layers import SpectralStats, WindowNorm

    torch.manual_seed(0)
    n_mels, t = 16, 120
    x = torch.randn(2, n_mels, t) * 0.5 - 8.0
    x[:, :, :40] = -40.0  # start-up padding: far below the floor, inactive
    tilt = torch.linspace(-1.5, 1.5, n_mels).view(1, -1, 1)  # about -+6.5 dB across the bins
    norm, stats = WindowNorm(n_mels, "cmn"), SpectralStats(n_mels)
    with torch.no_grad():
        y, mask = norm(x)
        assert mask[:, :40].sum() == 0 and mask[:, 40:].sum() > 0
        y_tilt, mask_tilt = norm(torch.where(x > -40.0, x + tilt, x))
        y_gain, _ = norm(x + 2.3)
        s, s_gain = stats(x, mask), stats(x + 2.3, mask)
        s_tilt = stats(torch.where(x > -40.0, x + tilt, x), mask_tilt)
        s_pad = stats(torch.where(x > -40.0, x, x - 5.0), mask)  # deeper padding: still floored, inactive
    active = mask.bool().unsqueeze(1).expand_as(y)
    assert torch.allclose(y[active], y_tilt[active], atol=1e-4)  # cmn: the tilt is gone
    assert torch.allclose(y, y_gain, atol=1e-4) and torch.allclose(s, s_gain, atol=1e-4)
    assert torch.allclose(s, s_pad, atol=1e-4)
    assert (s_tilt[:, :n_mels] - s[:, :n_mels]).abs().max() > 0.3  # the envelope saw it


def test_batchnorm_model_moves_with_gain() -> None:
    """The first models' fixed BatchNorm input is level-dependent: what the normalisation removes."""
    from emostream.models.arch import build_model
    from emostream.models.arch.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig("bandsplit_bilstm", 4, 64, {"channels": [4, 8], "band_dim": 16, "lstm_hidden": 16})).eval()
    with torch.no_grad():
        model.head.weight.mul_(5.0)
    fc = FeatureConfig(log_floor=1e-14)
    x = torch.from_numpy(np.pad(speechlike(3.0), (fc.window_samples - 3 * SR, 0)))[None]
    logmel = LogMel(fc)
    with torch.no_grad():
        a = torch.softmax(model(logmel(x)), 1)
        b = torch.softmax(model(logmel(x * 10)), 1)
    assert (a - b).abs().max() > 10 * INVARIANCE_TOL


def test_gain_and_level() -> None:
    x = speechlike()
    np.testing.assert_allclose(apply_gain(x, 6.0206), np.clip(2 * x, -1, 1), rtol=1e-5)
    loud = apply_gain(x, 30.0)
    assert loud.max() == pytest.approx(1.0) and loud.min() == pytest.approx(-1.0)  # clipped, as an input stage clips
    padded = np.concatenate([np.zeros(3 * SR, np.float32), x])
    assert active_rms(padded, SR) == pytest.approx(active_rms(x, SR), rel=0.02)  # silence is not speech
    out = Perturbation.parse("level:-30").apply(padded, SR)
    assert 20 * np.log10(active_rms(out, SR)) == pytest.approx(-30.0, abs=0.05)


def test_noise_snr_is_over_active_speech() -> None:
    x = np.concatenate([np.zeros(2 * SR, np.float32), speechlike()])
    noise = noise_bank(SR, 0)["pink"]
    out = add_noise(x, SR, 10.0, noise, start=100)
    added = out - x
    snr = 20 * np.log10(active_rms(x, SR) / np.sqrt(np.mean(added**2)))
    assert snr == pytest.approx(10.0, abs=0.2)
    assert np.abs(added[: 2 * SR]).max() > 0  # noise everywhere, also where nobody speaks
    evaluated = Perturbation.parse("noise:10").apply(x, SR, seed=3)
    assert np.array_equal(evaluated, Perturbation.parse("noise:10").apply(x, SR, seed=3))  # deterministic per clip


def test_band_limits_and_telephone_remove_what_they_state() -> None:
    rng = np.random.default_rng(0)
    white = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    low = band_limit(white, SR, 0.0, 4000.0)
    assert spectrum_db(low, 5700, 8000) - spectrum_db(white, 5700, 8000) < -40
    assert abs(spectrum_db(low, 500, 3000) - spectrum_db(white, 500, 3000)) < 0.5
    phone = telephone(white, SR)
    assert len(phone) == len(white)
    assert spectrum_db(phone, 4100, 8000) - spectrum_db(white, 4100, 8000) < -30  # 8 kHz line: nothing above 4 kHz
    assert spectrum_db(phone, 20, 150) - spectrum_db(white, 20, 150) < -20
    assert abs(spectrum_db(phone, 800, 2500) - spectrum_db(white, 800, 2500)) < 1.5
    q = Perturbation.parse("bits:8").apply(white, SR)
    assert len(np.unique(q)) <= 256


def test_reverb_adds_a_decaying_tail() -> None:
    burst = np.zeros(SR, np.float32)
    burst[1000:1400] = speechlike(0.025)
    rir = synthetic_rir(SR, 0.6, np.random.default_rng(0))
    assert rir[0] == 1.0 and np.abs(rir).max() == 1.0
    wet = reverb(burst, rir)
    tail = wet[1400 + int(0.05 * SR) : 1400 + int(0.3 * SR)]
    assert np.sqrt(np.mean(tail**2)) > 1e-3 > np.abs(burst[1400:]).max()
    later = wet[1400 + int(0.45 * SR) : 1400 + int(0.55 * SR)]
    assert np.sqrt(np.mean(later**2)) < np.sqrt(np.mean(tail**2)) / 3  # it decays


def test_perturbation_names_parse_and_refuse() -> None:
    items = Perturbation.parse_list("gain:-12,gain:+12,phone,noise:10,reverb")
    assert [p.name for p in items] == ["clean", "gain:-12", "gain:+12", "phone", "noise:10", "reverb:0.5"]
    for bad in ("gain", "phone:3", "loud:3", "lowpass:-5", "noise:x"):
        with pytest.raises(ValueError):
            Perturbation.parse(bad)


def test_augmenter_never_adds_noise_into_startup_padding() -> None:
    aug = Augmenter(AugmentConfig(p_noise=1.0, p_gain=0.0, p_bits=0.0), SR, seed=0)
    window = np.zeros(5 * SR, np.float32)
    window[2 * SR :] = speechlike(3.0)
    out = aug.waveform(window, np.random.default_rng(0), start=2 * SR)
    assert np.all(out[: 2 * SR] == 0)
    assert not np.allclose(out[2 * SR :], window[2 * SR :])
    channel = Augmenter(AugmentConfig(p_eq=1.0, p_reverb=1.0, p_band=1.0), SR, seed=0)
    changed = channel.channel(speechlike(), np.random.default_rng(1))
    assert not np.allclose(changed, speechlike())
    assert {"eq", "reverb"} <= set(channel.stats)


def test_gain_augmentation_to_a_speech_level() -> None:
    """``level_dbfs``: every window's speech lands in the drawn level range whatever the recording's
    level (a quiet and a loud recording span the same levels; the loud end clips); without it the gain
    is relative to the recording (``gain_db``)."""
    config = AugmentConfig(p_gain=1.0, p_noise=0.0, p_bits=0.0, level_dbfs=(-40.0, -20.0))
    aug = Augmenter(config, SR, seed=0)
    rng = np.random.default_rng(0)
    for recorded in (0.003, 0.3):  # about -60 and -20 dBFS speech
        x = speechlike(level=recorded)
        levels = [20 * np.log10(active_rms(aug.waveform(x, rng), SR)) for _ in range(40)]
        assert -40.5 < min(levels) and max(levels) < -19.5 and max(levels) - min(levels) > 12, (recorded, levels)
    hot = Augmenter(AugmentConfig(p_gain=1.0, p_noise=0.0, p_bits=0.0, level_dbfs=(-3.0, -3.0)), SR, seed=0)
    assert np.mean(np.abs(hot.waveform(speechlike(level=0.01), rng)) >= 1.0) > 0.01  # driven into clipping
    window = np.zeros(5 * SR, np.float32)  # start-up padding only: nothing to level, left as it is
    assert np.all(aug.waveform(window, rng, start=4 * SR) == 0)
    relative = Augmenter(AugmentConfig(p_gain=1.0, p_noise=0.0, p_bits=0.0, gain_db=(6.0, 6.0)), SR, seed=0)
    x = speechlike(level=0.003)
    assert 20 * np.log10(active_rms(relative.waveform(x, rng), SR) / active_rms(x, SR)) == pytest.approx(6.0, abs=0.01)
    assert AugmentConfig.from_dict({"level_dbfs": [-50, -6]}).level_dbfs == (-50, -6)
    for bad in ([-6, -50], [-50], "loud", [-50, "x"]):  # refused when the config is made, not mid-training
        with pytest.raises(ValueError, match="level_dbfs must be two numbers, low then high"):
            AugmentConfig.from_dict({"level_dbfs": bad})
    with pytest.raises(ValueError, match="gain_db must be two numbers"):
        AugmentConfig.from_dict({"gain_db": [15, -30]})


def vowel(formant_hz: float, f0_hz: float = 100.0, seconds: float = 1.0) -> np.ndarray:
    """A steady vowel: harmonics of ``f0_hz`` under one formant (a Gaussian envelope around ``formant_hz``)."""
    t = np.arange(int(seconds * SR)) / SR
    harmonics = np.arange(1, int(7800 / f0_hz))
    amps = np.exp(-(((harmonics * f0_hz - formant_hz) / 250.0) ** 2)) + 0.02
    x = (amps[:, None] * np.sin(2 * np.pi * f0_hz * harmonics[:, None] * t[None, :])).sum(axis=0)
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def test_mel_warp_moves_the_envelope_and_leaves_the_pitch() -> None:
    """``p_warp`` (vocal-tract length perturbation): a factor of 1.1 makes a vowel's log-mel closer to the
    same vowel with its formant 10 % higher (same F0) than it was, 0.9 makes it farther; the pitch rows and
    a factor of 1 change nothing; the augmenter warps the share it is asked to, draws nothing when off,
    and refuses bad settings."""
    fc = FeatureConfig(pitch=True)
    logmel, centres = LogMel(fc), mel_centres_hz(fc)
    low, high = (logmel(torch.from_numpy(vowel(f))[None])[0] for f in (1000.0, 1100.0))
    n = fc.n_mels
    frames = slice(5, -5)  # away from the edges' padding
    band = (centres > 300) & (centres < 4000)

    def distance(a: torch.Tensor) -> float:
        """Mean absolute difference of the time-averaged log-mel from the higher vowel's, 300-4000 Hz."""
        return float((a[:n, frames].mean(dim=1) - high[:n, frames].mean(dim=1))[band].abs().mean())

    batch = low[None].repeat(3, 1, 1)
    warped = mel_warp(batch, torch.tensor([1.0, 1.1, 0.9]), centres)
    assert torch.equal(warped[0], low)
    assert distance(warped[1]) < 0.6 * distance(low) < distance(warped[2]), (distance(low), distance(warped[1]))
    peak = [float(centres[int(w[:n, frames].mean(dim=1).argmax())]) for w in warped]
    assert 950 < peak[0] < 1050 and 1050 < peak[1] < 1160 and 850 < peak[2] < 960, peak
    assert torch.equal(warped[:, n:], batch[:, n:])  # periodicity and F0 rows untouched

    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    off = Augmenter(AugmentConfig(), SR)
    assert off.warp(batch, gen, centres) is batch and torch.equal(gen.get_state(), state) and "warp" not in off.stats
    half = Augmenter(AugmentConfig(p_warp=0.5, warp_range=(1.05, 1.1)), SR)
    many = low[None].repeat(200, 1, 1)
    out = half.warp(many, gen, centres)
    changed = (out[:, :n] != many[:, :n]).flatten(1).any(dim=1)
    assert int(changed.sum()) == half.stats["warp"] and 70 < half.stats["warp"] < 130
    for bad, match in (
        ({"p_warp": 1.5}, "p_warp must be a probability"),
        ({"warp_range": [1.1, 0.9]}, "warp_range must be two numbers"),
        ({"warp_range": [0, 1.1]}, "warp_range must be positive"),
    ):
        with pytest.raises(ValueError, match=match):
            AugmentConfig.from_dict(bad)


def test_balanced_sampling_shares() -> None:
    corpora = ["a"] * 900 + ["b"] * 100
    speakers = ["a1"] * 800 + ["a2"] * 100 + ["b1"] * 100
    w = sampling_weights(corpora, speakers, 1.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[:900].sum() == pytest.approx(0.5) and w[:800].sum() == pytest.approx(0.25)
    plain = sampling_weights(corpora, speakers, 0.0)
    np.testing.assert_allclose(plain, 1 / 1000)
    half = sampling_weights(corpora, speakers, 0.5)
    assert half[:900].sum() == pytest.approx(30 / 40)  # sqrt(900) : sqrt(100)
