"""Batched log-mel features in torch: the one feature function that training and serving share."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

WINDOW_TYPES = ("hann", "hamming", "rectangular")
LOG_KINDS = ("ln", "db")


PITCH_ROWS = 2
PITCH_MIN_HZ = 60.0
PITCH_MAX_HZ = 500.0
PITCH_REF_HZ = 200.0
"""``pitch_rows``: F0 is searched in 60-500 Hz; the F0 row is ``log2(F0 / 200 Hz)``."""

def pitch_lags(sample_rate_hz: int) -> tuple[int, int]:
    """The shortest and longest lag (samples at half ``sample_rate_hz``, where ``pitch_rows`` works) of
    the F0 search, 500 down to 60 Hz; ``pitch_rows`` also reads one lag either side of them."""
    rate = sample_rate_hz // 2
    return int(rate / PITCH_MAX_HZ), math.ceil(rate / PITCH_MIN_HZ)


LEGACY_NAMES = {"win_samples": "stft_win_samples"}
"""Setting names of older model files and what they are called now."""


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Every setting of the log-mel extractor; travels inside every model file.

    Frames are taken with ``center=False``: frame ``k`` covers samples
    ``[k * hop_samples, k * hop_samples + n_fft)``, so features can be computed
    incrementally per hop and equal the whole-window computation exactly.
    """

    sample_rate_hz: int = 16000
    n_fft: int = 512
    stft_win_samples: int = 400
    """Samples of the STFT analysis window (not to be confused with ``window_samples``, the 5-s window)."""
    hop_samples: int = 160
    window: str = "hann"
    n_mels: int = 64
    f_min_hz: float = 50.0
    f_max_hz: float = 8000.0
    log_floor: float = 1e-6
    log_kind: str = "ln"
    window_s: float = 5.0
    pitch: bool = False
    """Two more rows after the mel bins, per frame: periodicity and log2 F0 (``pitch_rows``)."""

    def __post_init__(self) -> None:
        if self.window not in WINDOW_TYPES:
            raise ValueError(f"window must be one of {WINDOW_TYPES}, got {self.window!r}")
        if self.log_kind not in LOG_KINDS:
            raise ValueError(f"log_kind must be one of {LOG_KINDS}, got {self.log_kind!r}")
        if self.sample_rate_hz <= 0 or self.hop_samples <= 0 or self.n_mels <= 0:
            raise ValueError("sample_rate_hz, hop_samples and n_mels must be positive")
        if not 0 < self.stft_win_samples <= self.n_fft:
            raise ValueError(f"stft_win_samples ({self.stft_win_samples}) must be in 1..n_fft ({self.n_fft})")
        if not 0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate_hz / 2:
            raise ValueError(
                f"need 0 <= f_min_hz < f_max_hz <= sample_rate_hz/2, got {self.f_min_hz}, {self.f_max_hz}"
            )
        if self.log_floor <= 0:
            raise ValueError("log_floor must be positive")
        window_samples = self.window_s * self.sample_rate_hz
        if abs(window_samples - round(window_samples)) > 1e-6:
            raise ValueError(f"window_s * sample_rate_hz must be a whole number of samples, got {window_samples}")
        if round(window_samples) < self.n_fft:
            raise ValueError("a window must hold at least one FFT frame")
        if self.pitch:
            longest = 2 * (pitch_lags(self.sample_rate_hz)[1] + 2)  # hi + 1 must lie inside a half-rate frame
            if self.n_fft < longest or self.n_fft % 2 or self.hop_samples % 2:
                raise ValueError(
                    f"pitch needs an even n_fft >= {longest} samples (a {PITCH_MIN_HZ:.0f}-Hz period at half the "
                    f"rate, and two) and an even hop, got n_fft {self.n_fft}, hop {self.hop_samples}"
                )

    @property
    def window_samples(self) -> int:
        """Samples in one classification window."""
        return round(self.window_s * self.sample_rate_hz)

    @property
    def n_rows(self) -> int:
        """Rows of the feature matrix: the mel bins, then ``PITCH_ROWS`` with ``pitch``."""
        return self.n_mels + (PITCH_ROWS if self.pitch else 0)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        """Frames in one full classification window."""
        return self.frames_for(self.window_samples)

    def frames_for(self, n_samples: int) -> int:
        """Frames that ``n_samples`` of audio yield (0 when shorter than one FFT)."""
        if n_samples < self.n_fft:
            return 0
        return 1 + (n_samples - self.n_fft) // self.hop_samples

    def hop_frames(self, hop_samples: int) -> int:
        """Frames per streaming hop; raises unless the hop is a whole number of frame hops."""
        if hop_samples % self.hop_samples:
            raise ValueError(
                f"a streaming hop of {hop_samples} samples is not a multiple of the feature hop "
                f"({self.hop_samples} samples)"
            )
        return hop_samples // self.hop_samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        data = {LEGACY_NAMES.get(k, k): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature settings: {sorted(unknown)}")
        return cls(**data)


def hz_to_mel(freq_hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (librosa's default, htk=False)."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = freq_hz / f_sp
    log_part = min_log_mel + torch.log(torch.clamp(freq_hz, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(freq_hz >= min_log_hz, log_part, linear)


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = f_sp * mels
    log_part = min_log_hz * torch.exp(logstep * (mels - min_log_mel))
    return torch.where(mels >= min_log_mel, log_part, linear)


def mel_edges_hz(cfg: FeatureConfig) -> torch.Tensor:
    """The ``n_mels + 2`` filter edges (Hz, float64), evenly spaced on the mel scale from f_min to f_max."""
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(cfg.f_min_hz, dtype=torch.float64))),
        float(hz_to_mel(torch.tensor(cfg.f_max_hz, dtype=torch.float64))),
        cfg.n_mels + 2,
        dtype=torch.float64,
    )
    return _mel_to_hz(mel_edges)


def mel_centres_hz(cfg: FeatureConfig) -> torch.Tensor:
    """The centre frequency (Hz) of each of ``mel_filterbank``'s ``n_mels`` filters, ``(n_mels,)`` float64."""
    return mel_edges_hz(cfg)[1:-1]


def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """Triangular mel filters ``(n_freqs, n_mels)``, Slaney scale and area norm (= librosa's default)."""
    fft_freqs = torch.linspace(0.0, cfg.sample_rate_hz / 2, cfg.n_freqs, dtype=torch.float64)
    hz_edges = mel_edges_hz(cfg)
    widths = torch.diff(hz_edges)  # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)  # (n_mels, n_freqs)
    enorm = 2.0 / (hz_edges[2:] - hz_edges[:-2])
    weights = weights * enorm[:, None]
    return weights.T.contiguous().to(torch.float32)


def analysis_window(cfg: FeatureConfig) -> torch.Tensor:
    """The STFT window, ``stft_win_samples`` long, zero-padded to ``n_fft`` and centred (as librosa does)."""
    if cfg.window == "hann":
        win = torch.hann_window(cfg.stft_win_samples, periodic=True, dtype=torch.float64)
    elif cfg.window == "hamming":
        win = torch.hamming_window(cfg.stft_win_samples, periodic=True, dtype=torch.float64)
    else:
        win = torch.ones(cfg.stft_win_samples, dtype=torch.float64)
    left = (cfg.n_fft - cfg.stft_win_samples) // 2
    padded = torch.zeros(cfg.n_fft, dtype=torch.float64)
    padded[left : left + cfg.stft_win_samples] = win
    return padded.to(torch.float32)


def log_mel(
    waveform: torch.Tensor,
    filterbank: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    hop_samples: int,
    log_floor: float,
    log_kind: str = "ln",
) -> torch.Tensor:
    """Log-mel of a batch: ``(B, samples) -> (B, n_mels, frames)``; pure, device-agnostic.

    No normalisation relative to the clip: a frame's value depends on that frame's audio only.
    """
    if waveform.dim() != 2:
        raise ValueError(f"expected a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
    if waveform.shape[1] < n_fft:
        raise ValueError(f"need at least n_fft={n_fft} samples, got {waveform.shape[1]}")
    spec = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop_samples,
        window=window,
        center=False,
        return_complex=True,
    )  # (B, n_freqs, T)
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(filterbank.T, power)  # (B, n_mels, T)
    logged = torch.log(torch.clamp(mel, min=log_floor))
    if log_kind == "db":
        logged = logged * (10.0 / math.log(10.0))
    return logged


def pitch_rows(waveform: torch.Tensor, sample_rate_hz: int, n_fft: int, hop_samples: int) -> torch.Tensor:
    """Periodicity and F0 per frame: ``(B, samples) -> (B, 2, frames)``; pure, device-agnostic.

    Frame ``k`` is the same ``n_fft`` samples as the STFT's (``[k * hop, k * hop + n_fft)``), so a
    frame's values depend on that frame's audio only, as the log-mel's do. The audio is first halved
    in rate (mean of sample pairs: F0 is at most 500 Hz; four times less work). Per frame: the
    normalised cross-correlation of the frame with itself shifted by each lag ``tau`` of 60-500 Hz,
    ``r(tau) = sum x[n] x[n + tau] / sqrt(sum x[n]^2 * sum x[n + tau]^2)`` over the overlap (every
    factor of the audio's gain cancels); the period is the shortest lag at a local peak of ``r`` within 5 %
    of the frame's best (so a multiple of the period does not win), refined by a parabola through its
    neighbours. Row 0: periodicity, the best ``r`` clamped to [0, 1] (0 for silence, low for noise,
    near 1 for voiced speech); row 1: ``log2(F0 / 200 Hz)`` (meaningful where the periodicity is high).
    """
    rate = sample_rate_hz // 2
    half = waveform[:, : waveform.shape[1] // 2 * 2].reshape(waveform.shape[0], -1, 2).mean(dim=2)
    n = n_fft // 2
    frames = half.unfold(1, n, hop_samples // 2)  # (B, T, n)
    frames = frames - frames.mean(dim=2, keepdim=True)
    # each frame at unit RMS first: every sum below is then of the same size at any gain (silence stays 0)
    frames = frames / frames.square().mean(dim=2, keepdim=True).sqrt().clamp(min=1e-12)
    spec = torch.fft.rfft(frames, n=2 * n)
    acf = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * n)[..., :n]  # (B, T, n)
    lo, hi = pitch_lags(sample_rate_hz)  # FeatureConfig checks hi + 2 <= n
    cs = torch.cumsum(frames.square(), dim=2)  # (B, T, n)
    # lags lo - 1 .. hi + 1 (one either side for the parabola), as slices rather than gathers
    head = cs[..., n - hi - 2 : n - lo + 1].flip(-1)  # energy of x[0 : n - tau]
    tail = cs[..., n - 1 : n] - cs[..., lo - 2 : hi + 1]  # energy of x[tau : n]
    r = acf[..., lo - 1 : hi + 2] / torch.sqrt(head * tail + 1e-6)  # (B, T, L)
    inner = r[..., 1:-1]
    best = inner.amax(dim=2, keepdim=True)
    peak = (inner >= r[..., :-2]) & (inner >= r[..., 2:]) & (inner >= best - 0.05 * best.abs())
    first = torch.argmax(peak.to(torch.int32), dim=2, keepdim=True)  # (B, T, 1); the best is always a candidate
    y0 = torch.gather(r, 2, first)
    y1 = torch.gather(r, 2, first + 1)
    y2 = torch.gather(r, 2, first + 2)
    curve = y0 - 2.0 * y1 + y2
    peaked = curve < -1e-6
    shift = torch.where(peaked, 0.5 * (y0 - y2) / torch.where(peaked, curve, -torch.ones_like(curve)), 0.0)
    lag = (lo + first).to(r.dtype) + shift.clamp(-0.5, 0.5)
    f0 = torch.log2(rate / lag / PITCH_REF_HZ)
    return torch.cat([best.clamp(0.0, 1.0), f0], dim=2).transpose(1, 2).contiguous()  # (B, 2, T)


class LogMel(nn.Module):
    """``(B, samples) -> (B, n_rows, frames)`` with the filterbank and window as buffers: the log-mel,
    then with ``pitch`` the two ``pitch_rows``."""

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_fft = cfg.n_fft
        self.hop_samples = cfg.hop_samples
        self.log_floor = cfg.log_floor
        self.log_kind = cfg.log_kind
        self.pitch = cfg.pitch
        self.sample_rate_hz = cfg.sample_rate_hz
        self.register_buffer("filterbank", mel_filterbank(cfg), persistent=False)
        self.register_buffer("window", analysis_window(cfg), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        filterbank, window = self.filterbank, self.window
        assert isinstance(filterbank, torch.Tensor) and isinstance(window, torch.Tensor)  # buffers, for mypy
        mel = log_mel(waveform, filterbank, window, self.n_fft, self.hop_samples, self.log_floor, self.log_kind)
        if not self.pitch:
            return mel
        return torch.cat([mel, pitch_rows(waveform, self.sample_rate_hz, self.n_fft, self.hop_samples)], dim=1)
