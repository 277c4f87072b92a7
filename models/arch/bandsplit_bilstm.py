"""bandsplit_bilstm, the default streaming model: band-split CNN encoders, band attention, BiLSTM, attention pooling."""

from __future__ import annotations

import math

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import (
    NORM_MODES,
    AttentionPool,
    ConvBlock,
    MaskedStatsPool,
    PitchTrack,
    SpectralStats,
    WindowNorm,
    band_edges,
    downsample_mask,
)

DEFAULTS: dict = {
    "band_fractions": [0.25, 0.5, 0.25],
    "channels": [16, 32],
    # each block's max-pool over time (one factor per block); the sequence the BiLSTM sees is
    # T / prod(time_pool) steps. [4, 2] halves the second convolution's and the BiLSTM's work.
    "time_pool": None,  # None: 2 per block
    "band_dim": 64,
    "lstm_hidden": 64,
    "dropout": 0.3,
    # "batch" (BatchNorm1d, the first models), "gain" or "cmn" (layers.WindowNorm: level-invariant)
    "input_norm": "batch",
    # "attention" (over every step, padding too) or "masked_stats" (mean + std over active steps only)
    "pooling": "attention",
    # with a WindowNorm input: the window's spectral statistics (layers.SpectralStats) beside the
    # pooled sequence, into the head
    "spectral_stats": False,
    # the features' two pitch rows after the mel bins (FeatureConfig.pitch; layers.PitchTrack): per-step
    # prosody beside the band features into the BiLSTM, and the window's pitch statistics into the head
    "pitch": False,
    "pitch_dim": 16,
    # False: only pitch relative to the window's own mean (not how high the voice is)
    "pitch_absolute": True,
}


class BandEncoder(nn.Module):
    """A small CNN over one band: ``(B, 1, F_band, T) -> (B, T / prod(time_pool), band_dim)``."""

    def __init__(self, channels: list[int], band_dim: int, time_pool: list[int] | None = None) -> None:
        super().__init__()
        blocks = []
        in_ch = 1
        for out_ch, t_pool in zip(channels, time_pool or [2] * len(channels), strict=True):
            blocks.append(ConvBlock(in_ch, out_ch, pool=(2, t_pool)))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(in_ch, band_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)  # (B, C, F', T')
        h = h.mean(dim=2).transpose(1, 2)  # (B, T', C)
        return torch.relu(self.proj(h))  # (B, T', D)


class BandAttention(nn.Module):
    """Weighs the bands per time step: ``(B, T, bands, D) -> (B, T, D)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(bands), dim=2)  # (B, T, bands, 1)
        return (weights * bands).sum(dim=2)


class BandSplitBiLSTM(nn.Module):
    """Log-mel ``(B, n_mels, T)`` (with ``pitch``: ``(B, n_mels + 2, T)``) -> logits ``(B, n_classes)``."""

    __constants__ = ["edges", "window_norm", "masked_pool", "time_factor", "with_stats", "with_pitch", "n_mels"]

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        if s["input_norm"] not in NORM_MODES:
            raise ValueError(f"input_norm must be one of {NORM_MODES}, got {s['input_norm']!r}")
        if s["pooling"] not in ("attention", "masked_stats"):
            raise ValueError(f"pooling must be attention or masked_stats, got {s['pooling']!r}")
        self.edges = band_edges(cfg.n_mels, list(s["band_fractions"]))
        self.window_norm = s["input_norm"] != "batch"
        self.masked_pool = s["pooling"] == "masked_stats"
        time_pool = [2] * len(s["channels"]) if s["time_pool"] is None else [int(t) for t in s["time_pool"]]
        if len(time_pool) != len(s["channels"]) or any(t < 1 for t in time_pool):
            raise ValueError(f"time_pool needs one factor >= 1 per block ({len(s['channels'])}), got {s['time_pool']}")
        self.time_factor = math.prod(time_pool)
        self.input_norm: nn.Module = (
            WindowNorm(cfg.n_mels, s["input_norm"]) if self.window_norm else nn.BatchNorm1d(cfg.n_mels)
        )
        self.encoders = nn.ModuleList(
            [BandEncoder(list(s["channels"]), int(s["band_dim"]), time_pool) for _ in range(len(self.edges) - 1)]
        )
        self.band_attention = BandAttention(int(s["band_dim"]))
        hidden = int(s["lstm_hidden"])
        self.n_mels = cfg.n_mels
        self.with_pitch = bool(s["pitch"])
        if self.with_pitch and not (self.window_norm and self.masked_pool):
            raise ValueError("pitch needs input_norm gain or cmn and pooling masked_stats (it uses the active frames)")
        pitch_dim = int(s["pitch_dim"]) if self.with_pitch else 0
        track = PitchTrack(self.time_factor, pitch_dim, bool(s["pitch_absolute"])) if self.with_pitch else None
        self.pitch_track: nn.Module = track if track is not None else nn.Identity()
        self.lstm = nn.LSTM(int(s["band_dim"]) + pitch_dim, hidden, batch_first=True, bidirectional=True)
        self.pool: nn.Module = MaskedStatsPool(2 * hidden) if self.masked_pool else AttentionPool(2 * hidden)
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.with_stats = bool(s["spectral_stats"])
        if self.with_stats and not self.window_norm:
            raise ValueError("spectral_stats needs input_norm gain or cmn")
        self.stats: nn.Module = SpectralStats(cfg.n_mels) if self.with_stats else nn.Identity()
        n_stats = 3 * cfg.n_mels if self.with_stats else 0
        n_stats += track.n_stats if track is not None else 0
        self.head = nn.Linear((4 if self.masked_pool else 2) * hidden + n_stats, cfg.n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logmel = features[:, : self.n_mels, :]
        if self.window_norm:
            normed, mask = self.input_norm(logmel)
        else:
            normed = self.input_norm(logmel)
            mask = torch.ones_like(logmel[:, 0, :])
        x = normed.unsqueeze(1)  # (B, 1, n_mels, T)
        outs: list[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            outs.append(encoder(x[:, :, self.edges[i] : self.edges[i + 1], :]))  # (B, T', D)
        bands = torch.stack(outs, dim=2)  # (B, T', bands, D)
        h = self.band_attention(bands)  # (B, T', D)
        pitch_stats = h.new_zeros(h.shape[0], 0)
        if self.with_pitch:
            steps, pitch_stats = self.pitch_track(features[:, self.n_mels :, :], mask, h.shape[1])
            h = torch.cat([h, steps], dim=2)
        h, _ = self.lstm(h)  # (B, T', 2H)
        if self.masked_pool:
            pooled = self.pool(h, downsample_mask(mask, self.time_factor, h.shape[1]))
        else:
            pooled = self.pool(h)
        if self.with_stats:
            pooled = torch.cat([pooled, self.stats(logmel, mask)], dim=1)
        if self.with_pitch:
            pooled = torch.cat([pooled, pitch_stats], dim=1)
        return self.head(self.dropout(pooled))
