"""The statistics baseline: per-clip log-mel and pitch statistics with multinomial logistic regression.

The floor every deep model must beat, scored on the same clips and splits. Per clip (the whole clip,
not streamer windows; it has no streaming form):

- log-mel (the model's features, ``models.features.LogMel``) over the active frames (within 30 dB of
  the loudest): per-bin mean relative to the clip's mean log energy (so the clip's gain cancels),
  per-bin standard deviation, the standard deviation of the per-bin first difference;
- frame log energy: standard deviation, 10/50/90th percentiles relative to the maximum, active share;
- pitch from a normalised autocorrelation (60-500 Hz, 40-ms frames, 10-ms hop; voiced when the peak
  exceeds 0.45): voiced share, mean/std/10th/90th percentile of log2 F0 and of its frame-to-frame change.

Features are standardised with the training clips' mean and deviation; the classifier is an
L2-regularised multinomial logistic regression fitted with L-BFGS in torch (class-balanced loss),
so no further dependency is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emostream.models.features import FeatureConfig, LogMel
from emostream.train.recipe import BASELINE_FEATURE_GROUPS as FEATURE_GROUPS

PITCH_MIN_HZ = 60.0
PITCH_MAX_HZ = 500.0
VOICING_THRESHOLD = 0.45
ACTIVE_DB = 30.0


def pitch_track(audio: np.ndarray, sample_rate_hz: int, frame_s: float = 0.04, hop_s: float = 0.01) -> np.ndarray:
    """F0 in Hz per frame (0.0 where unvoiced), from the normalised autocorrelation's highest peak."""
    n = int(frame_s * sample_rate_hz)
    hop = int(hop_s * sample_rate_hz)
    if len(audio) < n:
        return np.zeros(0)
    count = 1 + (len(audio) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    frames = audio[idx].astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    frames *= np.hanning(n)[None, :]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(frames, size, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, size, axis=1)[:, :n]
    energy = acf[:, :1]
    acf = acf / np.maximum(energy, 1e-12)
    lo, hi = int(sample_rate_hz / PITCH_MAX_HZ), min(n - 1, int(sample_rate_hz / PITCH_MIN_HZ))
    seg = acf[:, lo:hi]
    lag = seg.argmax(axis=1) + lo
    peak = seg.max(axis=1)
    f0 = sample_rate_hz / lag
    power = energy[:, 0]
    loud = power >= power.max() * 10.0 ** (-ACTIVE_DB / 10.0) if len(power) else power > 0
    return np.where((peak > VOICING_THRESHOLD) & loud, f0, 0.0)


def group_columns(n_mels: int, without: Sequence[str] = ()) -> np.ndarray:
    """Indices of the ``ClipFeatures`` columns outside the groups ``without`` (names of ``FEATURE_GROUPS``)."""
    unknown = sorted(set(without) - set(FEATURE_GROUPS))
    if unknown:
        raise ValueError(f"unknown feature groups {unknown}; known: {', '.join(FEATURE_GROUPS)}")
    if set(without) >= set(FEATURE_GROUPS):
        raise ValueError("leaving out every feature group leaves nothing to fit")
    sizes = {"mel_envelope": n_mels, "mel_std": n_mels, "mel_delta": n_mels, "energy": 5, "pitch": 9}
    cols: list[int] = []
    start = 0
    for name in FEATURE_GROUPS:
        if name not in without:
            cols.extend(range(start, start + sizes[name]))
        start += sizes[name]
    return np.asarray(cols, dtype=np.int64)


def speaker_normalise(x: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """Each row minus the mean of its speaker's rows (all of that speaker's clips: an enrolment-style
    normalisation that assumes every speaker's clips are known in advance, test speakers included)."""
    keys = np.asarray(list(speakers))
    out = np.asarray(x, dtype=np.float64).copy()
    for key in np.unique(keys):
        rows = keys == key
        out[rows] -= out[rows].mean(axis=0)
    return out.astype(np.float32)


def _stats(x: np.ndarray) -> list[float]:
    if len(x) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(x.mean()), float(x.std()), float(np.percentile(x, 10)), float(np.percentile(x, 90))]


class ClipFeatures:
    """``(audio list) -> (n_clips, n_features)`` float32 statistics (see the module docstring)."""

    def __init__(self, feature_config: FeatureConfig) -> None:
        self.fc = feature_config
        self.logmel = LogMel(feature_config).eval()

    @torch.inference_mode()
    def one(self, audio: np.ndarray) -> np.ndarray:
        """The statistics of one clip of float audio in [-1, 1]."""
        sr = self.fc.sample_rate_hz
        x = np.asarray(audio, dtype=np.float32)
        if len(x) < self.fc.n_fft:
            x = np.pad(x, (0, self.fc.n_fft - len(x)))
        mel = self.logmel(torch.from_numpy(x)[None])[0].numpy()  # (M, T), natural log
        energy = mel.mean(axis=0)
        active = energy >= energy.max() - ACTIVE_DB * np.log(10) / 10
        m = mel[:, active]
        level = float(m.mean())
        diff = np.diff(m, axis=1) if m.shape[1] > 1 else np.zeros((m.shape[0], 1))
        e = energy - energy.max()
        f0 = pitch_track(x, sr)
        voiced = f0[f0 > 0]
        semis = np.log2(voiced) if len(voiced) else np.zeros(0)
        dsemis = np.abs(np.diff(semis)) if len(semis) > 1 else np.zeros(0)
        parts = [
            m.mean(axis=1) - level,
            m.std(axis=1),
            diff.std(axis=1),
            [float(e[active].std()), *np.percentile(e, [10, 50, 90]).tolist(), float(active.mean())],
            [float(len(voiced) / max(1, len(f0)))],
            _stats(semis),
            _stats(dsemis),
        ]
        return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]).astype(np.float32)

    def __call__(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """``one`` of every clip (float audio in [-1, 1])."""
        return np.stack([self.one(a) for a in audio]) if len(audio) else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class Standardised:
    """Training rows for a classifier on statistics: the columns' ``mean`` and ``scale``, the standardised
    rows ``x``, the labels ``y`` and class-balancing loss weights (inverse class frequency)."""

    mean: np.ndarray
    scale: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    class_weight: torch.Tensor


def standardise(x: np.ndarray, y: np.ndarray, n_classes: int) -> Standardised:
    """``Standardised`` rows of ``x (N, D)`` with labels ``y (N,)`` in ``0..n_classes-1``."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return Standardised(
        mean,
        scale,
        torch.from_numpy(((x - mean) / scale).astype(np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
        torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32),
    )


@dataclass
class LogisticBaseline:
    """Standardisation + multinomial logistic regression (L2 ``weight_decay``), class-balanced."""

    n_classes: int
    weight_decay: float = 1e-2
    max_iter: int = 300
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, domains: np.ndarray | None = None) -> LogisticBaseline:
        """Fit in closed form (L-BFGS); ``domains`` (each row's speaker, ``train.statsfit.Fit``) is not used."""
        rows = standardise(x, y, self.n_classes)
        self.mean, self.scale, xt, yt = rows.mean, rows.scale, rows.x, rows.y
        w = torch.zeros(xt.shape[1], self.n_classes, requires_grad=True)
        b = torch.zeros(self.n_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, line_search_fn="strong_wolfe")
        loss_fn = torch.nn.CrossEntropyLoss(weight=rows.class_weight)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(xt @ w + b, yt) + self.weight_decay * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.weight is None or self.bias is None or self.mean is None or self.scale is None:
            raise RuntimeError("fit the baseline first")
        xt = torch.from_numpy(((x - self.mean) / self.scale).astype(np.float32))
        return torch.softmax(xt @ self.weight + self.bias, dim=1).numpy()
