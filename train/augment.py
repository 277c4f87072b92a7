"""Training-only augmentation: speed, channel (EQ, band limits, telephone, bit depth, reverb), noise and
gain on the waveform; SpecAugment masks on batched log-mel.

The channel and level transforms are ``train.perturb``'s, the same functions that
``emostream evaluate --perturb`` scores a model under. Order, per training window:
speed (on the clip) -> EQ, reverb, band limit (on the clip's audio) -> window placement
(``train.dataset``) -> noise at an SNR over the active speech, added only where the stream has
begun (never into the start-up zero padding, which a live stream also has as digital zeros) ->
gain over the full level span (clipped at full scale) -> low bit depth.
The model normalises the level itself (``models.arch.layers.WindowNorm``); the gain augmentation
is for what gain does beyond a scale: clipping, quantisation and the noise floor.

audiomentations is not used: its transforms cost several milliseconds per window, more than the
model step they feed on two cores; these are numpy FFT filters and soxr. Pitch shift is not done
separately: speed perturbation (resampling by 0.9-1.1) shifts pitch and tempo together.
Every transform counts how often it fired in ``Augmenter.stats``, so a run can prove it was applied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import soxr
import torch

from emostream.models.features import hz_to_mel
from emostream.train.perturb import (
    active_rms,
    add_noise,
    apply_gain,
    band_limit,
    mu_law,
    noise_bank,
    quantise,
    random_eq,
    reverb,
    synthetic_rir,
    telephone,
)

RIR_BANK = 48
"""Synthetic room impulse responses drawn once per run; windows pick one at random."""


LINES = (None, "telephone")
"""``AugmentConfig.line``'s choices."""


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Probabilities and ranges of every training augmentation (``enabled=False`` turns all off)."""

    enabled: bool = True
    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-30.0, 15.0)
    level_dbfs: tuple[float, float] | None = None
    """When set, the gain brings the clip's active speech to a level drawn from this range (dBFS, e.g.
    ``(-50, -6)``: a quiet far microphone to a hot input that clips) instead of ``gain_db`` relative to
    the recording, so every corpus spans the same levels and the loud end clips as often for each."""
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (0.0, 35.0)
    p_eq: float = 0.4
    eq_db: float = 8.0
    p_band: float = 0.3
    """A band limit: telephone (300-3400 Hz, 8 kHz mu-law), low-pass 4-7 kHz or high-pass 100-300 Hz."""
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.9)
    p_bits: float = 0.1
    """8-12 bit linear or 8-bit mu-law quantisation."""
    p_warp: float = 0.0
    """Vocal-tract length perturbation on the log-mel (``mel_warp``): the share of windows whose spectral
    envelope is moved along the frequency axis by a factor drawn from ``warp_range``, the pitch rows and
    the tempo left alone (speed perturbation moves all three together). 0 (off) in every recipe before
    2026-12-06, so their training draws are unchanged."""
    warp_range: tuple[float, float] = (0.9, 1.1)
    line: str | None = None
    """``"telephone"``: every training window goes through the telephone line last (300-3400 Hz, 8 kHz,
    8-bit mu-law; after the noise, gain and bit depth), and ``clip_stats``'s clean rows too, so a model learns
    narrowband audio only: a member for an ensemble's narrowband windows (``emostream ensemble --narrow``).
    None (every recipe before 2026-12-06): the line is only one of ``p_band``'s draws."""
    p_specaugment: float = 0.8
    n_time_masks: int = 2
    max_time_mask_frames: int = 40
    n_freq_masks: int = 2
    max_freq_mask_bins: int = 8

    def __post_init__(self) -> None:
        for name in ("speed_range", "gain_db", "level_dbfs", "snr_db", "rt60_s", "warp_range"):
            value = getattr(self, name)
            if value is None and name == "level_dbfs":
                continue
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or value[0] > value[1]
            ):
                raise ValueError(f"augment setting {name} must be two numbers, low then high; got {value!r}")
        if not 0.0 <= self.p_warp <= 1.0:
            raise ValueError(f"augment setting p_warp must be a probability (0 to 1); got {self.p_warp!r}")
        if self.line not in LINES:
            raise ValueError(f"augment setting line is null or one of {', '.join(x for x in LINES if x)}; got {self.line!r}")
        if self.warp_range[0] <= 0:
            raise ValueError(f"augment setting warp_range must be positive factors; got {self.warp_range!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; known: {', '.join(sorted(known))}")
        fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)


class Augmenter:
    """Applies ``AugmentConfig`` to training audio and features; ``stats`` counts what was applied."""

    def __init__(self, config: AugmentConfig, sample_rate_hz: int, seed: int = 0) -> None:
        self.config = config
        self.sample_rate_hz = sample_rate_hz
        self.noise = noise_bank(sample_rate_hz, seed) if config.enabled and config.p_noise > 0 else {}
        rng = np.random.default_rng([seed, 31337])
        self.rirs = (
            [
                synthetic_rir(sample_rate_hz, float(rng.uniform(*config.rt60_s)), rng, float(rng.uniform(-6, 6)))
                for _ in range(RIR_BANK)
            ]
            if config.enabled and config.p_reverb > 0
            else []
        )
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

    def channel(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Microphone colour (EQ), room (reverb) and line (band limit) on a clip's audio."""
        c = self.config
        if not c.enabled or len(audio) < 2:
            return audio
        sr = self.sample_rate_hz
        out = audio
        if rng.random() < c.p_eq:
            out = random_eq(out, sr, rng, c.eq_db)
            self.stats["eq"] += 1
        if self.rirs and rng.random() < c.p_reverb:
            out = reverb(out, self.rirs[int(rng.integers(len(self.rirs)))])
            self.stats["reverb"] += 1
        if rng.random() < c.p_band:
            kind = rng.random()
            if kind < 0.4:
                out = telephone(out, sr)
                self.stats["telephone"] += 1
            elif kind < 0.8:
                out = band_limit(out, sr, 0.0, float(rng.uniform(4000.0, min(7000.0, sr / 2))))
                self.stats["lowpass"] += 1
            else:
                out = band_limit(out, sr, float(rng.uniform(100.0, 300.0)), 0.0)
                self.stats["highpass"] += 1
        return out

    def waveform(
        self, window: np.ndarray, rng: np.random.Generator, start: int = 0, speech_rms: float | None = None
    ) -> np.ndarray:
        """Noise at a random SNR over the active speech (from sample ``start`` on: the stream's start-up
        zero padding stays zero), then gain over the full level span (clipped), then low bit depth."""
        c = self.config
        if not c.enabled:
            return window
        out = window
        sr = self.sample_rate_hz
        if self.noise and rng.random() < c.p_noise and start < len(out):
            rms = active_rms(out[start:], sr) if speech_rms is None else speech_rms
            if rms > 0:
                bank = self.noise["pink" if rng.random() < 0.5 else "white"]
                offset = int(rng.integers(0, len(bank) - (len(out) - start)))
                out = out.copy()
                out[start:] = add_noise(out[start:], sr, float(rng.uniform(*c.snr_db)), bank, offset, rms)
                self.stats["noise"] += 1
        if rng.random() < c.p_gain:
            out = apply_gain(out, self._gain_db(out, rng, start, speech_rms))
            self.stats["gain"] += 1
        if rng.random() < c.p_bits:
            if rng.random() < 0.5:
                out = mu_law(out, 8)
            else:
                out = quantise(out, int(rng.integers(8, 13)))
            self.stats["bits"] += 1
        return self.line(out.astype(np.float32, copy=False))

    def line(self, audio: np.ndarray) -> np.ndarray:
        """Float audio through ``line`` (the telephone line), or the same array without one."""
        if self.config.enabled and self.config.line == "telephone" and len(audio):
            self.stats["line"] += 1
            return telephone(audio, self.sample_rate_hz).astype(np.float32, copy=False)
        return audio

    def _gain_db(self, window: np.ndarray, rng: np.random.Generator, start: int, speech_rms: float | None) -> float:
        """The gain of one window: relative (``gain_db``), or to a drawn speech level (``level_dbfs``)."""
        c = self.config
        if c.level_dbfs is None:
            return float(rng.uniform(*c.gain_db))
        target = float(rng.uniform(*c.level_dbfs))
        rms = active_rms(window[start:], self.sample_rate_hz) if speech_rms is None else speech_rms
        if rms <= 0:  # silence (or start-up padding only): nothing to bring to a level
            return 0.0
        return target - 20.0 * float(np.log10(rms))

    # -- features ------------------------------------------------------------------------------

    def warp(self, features: torch.Tensor, generator: torch.Generator, centres_hz: torch.Tensor) -> torch.Tensor:
        """``mel_warp`` on a batch ``(B, rows, T)`` whose first ``len(centres_hz)`` rows are the log-mel: each
        window with probability ``p_warp``, by a factor drawn from ``warp_range``. Draws nothing when off."""
        c = self.config
        if not c.enabled or c.p_warp <= 0:
            return features
        b = features.shape[0]
        apply = torch.rand(b, generator=generator) < c.p_warp
        low, high = c.warp_range
        factors = torch.where(apply, low + (high - low) * torch.rand(b, generator=generator), torch.ones(b))
        self.stats["warp"] += int(apply.sum())
        return mel_warp(features, factors, centres_hz)

    def spec(self, features: torch.Tensor, generator: torch.Generator, n_mels: int | None = None) -> torch.Tensor:
        """SpecAugment on a batch ``(B, rows, T)``: time and frequency masks on the first ``n_mels`` rows (the
        log-mel; default all), filled with each example's mean; rows after them (pitch) pass unchanged."""
        c = self.config
        if not c.enabled or c.p_specaugment <= 0:
            return features
        n_mels = features.shape[1] if n_mels is None else n_mels
        logmel, extra = features[:, :n_mels], features[:, n_mels:]
        b, n_frames = logmel.shape[0], logmel.shape[2]
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
        return torch.cat([torch.where(keep, logmel, fill), extra], dim=1)


def mel_warp(features: torch.Tensor, factors: torch.Tensor, centres_hz: torch.Tensor) -> torch.Tensor:
    """Move each window's spectral envelope along the frequency axis (vocal-tract length perturbation):
    ``features (B, rows, T)``, the first ``len(centres_hz)`` rows a log-mel whose bins are centred at
    ``centres_hz``; ``factors (B,)``. Bin k of window b takes the value the input had at ``centre_k / factor_b``
    (a factor above 1 moves formants up), linearly interpolated between bins on the mel scale and held at the
    first or last bin beyond the range; a factor of 1 returns the window unchanged; rows after the log-mel
    (pitch) pass unchanged."""
    n_mels = len(centres_hz)
    logmel, extra = features[:, :n_mels], features[:, n_mels:]
    hz = centres_hz.to(torch.float64)
    mel = hz_to_mel(hz)
    source = hz_to_mel(hz[None, :] / factors.to(torch.float64)[:, None])  # (B, F)
    # fractional bin index of each source frequency (bins are evenly spaced on the mel scale)
    pos = ((source - mel[0]) / (mel[1] - mel[0])).clamp(0.0, n_mels - 1.0)
    pos = torch.where((factors == 1.0)[:, None], torch.arange(n_mels, dtype=torch.float64)[None, :], pos)
    lo = pos.floor().long().clamp(max=n_mels - 2) if n_mels > 1 else pos.floor().long()
    frac = (pos - lo).to(logmel.dtype)
    hi = (lo + 1).clamp(max=n_mels - 1)
    t = logmel.shape[2]
    below = torch.gather(logmel, 1, lo[:, :, None].expand(-1, -1, t))
    above = torch.gather(logmel, 1, hi[:, :, None].expand(-1, -1, t))
    warped = below + frac[:, :, None] * (above - below)
    return torch.cat([warped, extra], dim=1)
