"""Training-only augmentation: speed, gain and noise on the waveform; SpecAugment masks on batched log-mel.

All of it is cheap numpy / soxr / torch; audiomentations is not used (its speed and pitch transforms
cost several milliseconds per window, more than the model step they feed on two cores). Pitch shift
is not done separately: speed perturbation (resampling by 0.9-1.1) shifts pitch and tempo together.
Every transform counts how often it fired in ``Augmenter.stats``, so a run can prove it was applied.
The random time shift and the joining of clips are window placement and live in ``train.dataset``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import soxr
import torch

NOISE_BANK_S = 20.0
"""Seconds of each pre-generated noise colour; windows take random excerpts of it."""


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Probabilities and ranges of every training augmentation (``enabled=False`` turns all off)."""

    enabled: bool = True
    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-12.0, 6.0)
    p_noise: float = 0.4
    snr_db: tuple[float, float] = (5.0, 35.0)
    p_specaugment: float = 0.8
    n_time_masks: int = 2
    max_time_mask_frames: int = 40
    n_freq_masks: int = 2
    max_freq_mask_bins: int = 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)


def _noise_bank(sample_rate_hz: int, seed: int) -> dict[str, np.ndarray]:
    """Unit-RMS white and pink noise, ``NOISE_BANK_S`` long each."""
    rng = np.random.default_rng(seed)
    n = int(NOISE_BANK_S * sample_rate_hz)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))  # 1/f power
    pink = np.fft.irfft(spectrum, n)
    return {
        name: (x / np.sqrt(np.mean(x**2))).astype(np.float32)
        for name, x in (("white", white), ("pink", pink))
    }


class Augmenter:
    """Applies ``AugmentConfig`` to training audio and features; ``stats`` counts what was applied."""

    def __init__(self, config: AugmentConfig, sample_rate_hz: int, seed: int = 0) -> None:
        self.config = config
        self.sample_rate_hz = sample_rate_hz
        self.noise = _noise_bank(sample_rate_hz, seed) if config.enabled and config.p_noise > 0 else {}
        self.stats: Counter[str] = Counter()

    # -- waveform ------------------------------------------------------------------------------

    def speed(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Speed perturbation: resample by a factor in ``speed_range`` (faster = shorter and higher)."""
        c = self.config
        if not c.enabled or rng.random() >= c.p_speed or len(audio) < 2:
            return audio
        factor = rng.uniform(*c.speed_range)
        self.stats["speed"] += 1
        out = soxr.resample(audio, self.sample_rate_hz * factor, self.sample_rate_hz, quality="QQ")
        return np.asarray(out, dtype=np.float32)

    def waveform(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gain, then additive white or pink noise at a random SNR (relative to the speech's RMS)."""
        c = self.config
        if not c.enabled:
            return window
        out = window
        if rng.random() < c.p_gain:
            out = out * np.float32(10.0 ** (rng.uniform(*c.gain_db) / 20.0))
            self.stats["gain"] += 1
        if self.noise and rng.random() < c.p_noise:
            voiced = out[out != 0]
            rms = float(np.sqrt(np.mean(voiced**2))) if len(voiced) else 0.0
            if rms > 0:
                bank = self.noise["pink" if rng.random() < 0.5 else "white"]
                start = int(rng.integers(0, len(bank) - len(out)))
                scale = rms / 10.0 ** (rng.uniform(*c.snr_db) / 20.0)
                out = out + np.float32(scale) * bank[start : start + len(out)]
                self.stats["noise"] += 1
        return out.astype(np.float32, copy=False)

    # -- features ------------------------------------------------------------------------------

    def spec(self, logmel: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """SpecAugment on a batch ``(B, n_mels, T)``: time and frequency masks filled with each example's mean."""
        c = self.config
        if not c.enabled or c.p_specaugment <= 0:
            return logmel
        b, n_mels, n_frames = logmel.shape
        apply = torch.rand(b, generator=generator) < c.p_specaugment  # (B,)
        keep = torch.ones(b, n_mels, n_frames, dtype=torch.bool)
        frames = torch.arange(n_frames)
        bins = torch.arange(n_mels)
        for _ in range(c.n_time_masks):
            width = torch.randint(0, c.max_time_mask_frames + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (n_frames - width).clamp(min=1)).long()
            hit = (frames[None, :] >= start[:, None]) & (frames[None, :] < (start + width)[:, None])  # (B, T)
            keep &= ~(hit & apply[:, None])[:, None, :]
        for _ in range(c.n_freq_masks):
            width = torch.randint(0, c.max_freq_mask_bins + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (n_mels - width).clamp(min=1)).long()
            hit = (bins[None, :] >= start[:, None]) & (bins[None, :] < (start + width)[:, None])  # (B, F)
            keep &= ~(hit & apply[:, None])[:, :, None]
        self.stats["specaugment"] += int(apply.sum())
        fill = logmel.mean(dim=(1, 2), keepdim=True).expand_as(logmel)
        return torch.where(keep, logmel, fill)
