"""The pitch rows (``FeatureConfig.pitch``): what they measure, that they are per frame (so streaming equals
offline), gain-free, and that a model taking them is exported, checked against its features and streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_FEATURES, build_tiny_model
from oracle import offline_window_probs
from test_frames import reference, run_stream, signal
from test_replay import replay, synthetic
from test_robustness import BACKENDS, INVARIANCE_TOL, speechlike

from emostream.models.arch.config import ModelConfig
from emostream.models.features import PITCH_REF_HZ, FeatureConfig, LogMel, pitch_rows
from emostream.models.modelfile import ModelSpec, load_classifier
from emostream.streamer.core.resample import resample
from emostream.train.augment import AugmentConfig, Augmenter

SR = 16000
PITCH = FeatureConfig(pitch=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(audio: np.ndarray, cfg: FeatureConfig = PITCH) -> np.ndarray:
    """``(2, frames)``: periodicity and log2(F0 / 200 Hz) of one clip."""
    with torch.inference_mode():
        return LogMel(cfg)(torch.from_numpy(audio.astype(np.float32))[None]).numpy()[0, cfg.n_mels :]


def harmonic(f0_hz: float, seconds: float = 1.0, level: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 9))
    return (level * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [70.0, 95.0, 130.0, 180.0, 240.0, 330.0, 480.0])
def test_f0_and_periodicity_of_a_harmonic_tone(f0_hz: float) -> None:
    periodicity, f0 = rows_of(harmonic(f0_hz))
    assert periodicity.min() > 0.95
    estimate = PITCH_REF_HZ * 2.0 ** np.median(f0)
    assert abs(estimate / f0_hz - 1) < 0.01, estimate  # within a sixth of a semitone, no octave error


def test_gliding_pitch_is_tracked_frame_by_frame() -> None:
    t = np.arange(2 * SR) / SR
    f0 = 120.0 * 2.0 ** t  # one octave in 2 s
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = (0.1 * sum(np.sin(k * phase) / k for k in range(1, 9))).astype(np.float32)
    _, rows = rows_of(x)
    centres = (np.arange(len(rows)) * PITCH.hop_samples + PITCH.n_fft / 2) / SR
    expected = np.log2(120.0 * 2.0**centres / PITCH_REF_HZ)
    assert np.abs(rows - expected).max() < 0.03  # octaves: about a third of a semitone


def test_noise_and_silence_are_not_periodic() -> None:
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert rows_of(noise)[0].mean() < 0.4
    assert np.all(rows_of(np.zeros(SR, np.float32))[0] == 0.0)  # digital silence (start-up padding)


def test_pitch_rows_do_not_move_with_gain() -> None:
    x = speechlike(2.0)
    base = rows_of(x)
    for gain_db in (-40.0, -20.0, 20.0):
        moved = rows_of(x * np.float32(10 ** (gain_db / 20)))
        np.testing.assert_allclose(moved, base, atol=2e-3)


def test_log_mel_rows_are_unchanged_and_config_sizes() -> None:
    x = speechlike(1.0)
    with torch.inference_mode():
        plain = LogMel(FeatureConfig())(torch.from_numpy(x)[None])
        both = LogMel(PITCH)(torch.from_numpy(x)[None])
    assert PITCH.n_rows == PITCH.n_mels + 2 and FeatureConfig().n_rows == FeatureConfig().n_mels
    assert both.shape == (1, PITCH.n_rows, plain.shape[2])
    torch.testing.assert_close(both[:, : PITCH.n_mels], plain, rtol=0, atol=0)
    assert FeatureConfig.from_dict(PITCH.to_dict()) == PITCH
    with pytest.raises(ValueError, match="pitch needs an even n_fft"):
        FeatureConfig(pitch=True, n_fft=256, stft_win_samples=256)


def test_a_frame_depends_only_on_its_own_samples() -> None:
    x = speechlike(1.0, seed=3)
    whole = pitch_rows(torch.from_numpy(x)[None], SR, PITCH.n_fft, PITCH.hop_samples)[0]
    start = 37 * PITCH.hop_samples
    part = pitch_rows(torch.from_numpy(x[start : start + 20 * PITCH.hop_samples + PITCH.n_fft])[None], SR,
                      PITCH.n_fft, PITCH.hop_samples)[0]
    torch.testing.assert_close(part, whole[:, 37 : 37 + part.shape[1]], rtol=0, atol=1e-5)


def test_streamed_windows_equal_the_whole_window_features() -> None:
    cfg = FeatureConfig(window_s=0.5, pitch=True)
    audio = signal(20000, 5) + np.tile(harmonic(150.0, 0.25), 5)[:20000]
    results = run_stream(cfg, audio, 1600, [333, 2048, 17], [0, 1])
    assert any(incremental for _, _, incremental in results)
    for end, window, _ in results:
        assert window.shape == (cfg.n_rows, cfg.n_frames)
        np.testing.assert_allclose(window, reference(cfg, audio, end), atol=1e-4, rtol=0)


def test_specaugment_masks_the_log_mel_only() -> None:
    aug = Augmenter(AugmentConfig(p_specaugment=1.0, max_freq_mask_bins=16, max_time_mask_frames=100), SR, seed=0)
    with torch.inference_mode():
        feats = LogMel(PITCH)(torch.from_numpy(np.stack([speechlike(5.0, seed=s) for s in range(4)])))
    out = aug.spec(feats, torch.Generator().manual_seed(0), PITCH.n_mels)
    torch.testing.assert_close(out[:, PITCH.n_mels :], feats[:, PITCH.n_mels :], rtol=0, atol=0)
    assert (out[:, : PITCH.n_mels] != feats[:, : PITCH.n_mels]).any()


# ----------------------------------------------------------------------------- a model that takes them


@pytest.fixture(scope="module")
def pitch_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_pitch"), features={"pitch": True})


def window_with(speech: np.ndarray, fc: FeatureConfig) -> np.ndarray:
    window = np.zeros(fc.window_samples, np.float32)
    window[-len(speech) :] = speech  # a start-up window: zero padding, then speech
    return window


@pytest.mark.parametrize("backend", BACKENDS)
def test_pitch_model_equals_eager_and_ignores_gain(pitch_model_dir: Path, backend: str) -> None:
    eager = load_classifier(pitch_model_dir, backend="eager")
    clf = load_classifier(pitch_model_dir, backend=backend)
    fc = clf.feature_config
    assert fc.pitch and clf.model_config.settings["pitch"] is True
    logmel = LogMel(fc)
    windows = np.stack([window_with(speechlike(3.0, seed=s), fc) for s in range(3)])
    feats = logmel(torch.from_numpy(windows))
    base = clf.predict(feats)
    np.testing.assert_allclose(base, eager.predict(feats), atol=1e-4)
    for gain_db in (-20.0, 20.0):
        probs = clf.predict(logmel(torch.from_numpy(windows * np.float32(10 ** (gain_db / 20)))))
        assert np.abs(probs - base).max() < INVARIANCE_TOL, (backend, gain_db)
    with pytest.raises(ValueError, match=f"shape \\(B, {fc.n_rows}, T\\)"):
        clf.predict(feats[:, : fc.n_mels])


def test_pitch_model_uses_the_pitch_rows(pitch_model_dir: Path) -> None:
    clf = load_classifier(pitch_model_dir, backend="eager")
    fc = clf.feature_config
    feats = LogMel(fc)(torch.from_numpy(window_with(speechlike(3.0), fc))[None])
    shifted = feats.clone()
    shifted[:, fc.n_mels + 1] += 1.0  # the same speech an octave higher
    assert np.abs(clf.predict(shifted) - clf.predict(feats)).max() > 1e-3


def test_relative_pitch_model_ignores_how_high_the_voice_is(tmp_path: Path) -> None:
    """``pitch_absolute: false``: the same contour an octave higher gives the same estimate; a model
    with absolute pitch (the default) tells them apart (test_pitch_model_uses_the_pitch_rows)."""
    model_dir = build_tiny_model(tmp_path, features={"pitch": True}, settings={"pitch_absolute": False})
    for backend in BACKENDS:
        clf = load_classifier(model_dir, backend=backend)
        fc = clf.feature_config
        feats = LogMel(fc)(torch.from_numpy(window_with(speechlike(3.0), fc))[None])
        higher = feats.clone()
        higher[:, fc.n_mels + 1] += 1.0
        contour = feats.clone()
        contour[:, fc.n_mels + 1] *= 3.0  # a wider contour around the same mean
        assert np.abs(clf.predict(higher) - clf.predict(feats)).max() < 1e-5, backend
        assert np.abs(clf.predict(contour) - clf.predict(feats)).max() > 1e-4, backend


def test_model_and_features_must_agree_on_pitch() -> None:
    settings = {"input_norm": "cmn", "pooling": "masked_stats", "channels": [4, 8], "band_dim": 16, "lstm_hidden": 16}
    labels = ("neutral", "happy")
    with pytest.raises(ValueError, match="does not take pitch rows, the features give them"):
        ModelSpec(FeatureConfig(pitch=True), ModelConfig("bandsplit_bilstm", 2, 64, settings), labels)
    with pytest.raises(ValueError, match="expects pitch rows, the features do not give them"):
        ModelSpec(FeatureConfig(), ModelConfig("bandsplit_bilstm", 2, 64, {**settings, "pitch": True}), labels)
    with pytest.raises(ValueError, match="pitch needs input_norm"):
        from emostream.models.arch import build_model

        build_model(ModelConfig("bandsplit_bilstm", 2, 64, {"pitch": True}))


def test_replay_of_a_pitch_model_equals_offline(tmp_path: Path, pitch_model_dir: Path) -> None:
    rate = 48000
    path = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(path, synthetic(6.2, rate, 1, seed=3), rate, subtype="FLOAT")
    events = replay(path, pitch_model_dir, tmp_path / "out.jsonl")
    clf = load_classifier(pitch_model_dir)
    audio, _ = sf.read(path, dtype="float32", always_2d=True)
    mono = resample(audio.mean(axis=1, dtype=np.float32), rate, clf.feature_config.sample_rate_hz)
    ref = offline_window_probs(mono, clf, clf.feature_config.sample_rate_hz)
    got = np.array([[e["raw_probs"][label] for label in clf.labels] for e in events])
    assert got.shape == ref.shape and len(got) >= 6
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert TINY_FEATURES["log_floor"] == clf.feature_config.log_floor
