"""bandsplit_bilstm, the default streaming model: band-split CNN encoders, band attention, BiLSTM, attention pooling."""

from __future__ import annotations

import torch
from torch import nn

from models.arch.config import ModelConfig
from models.arch.layers import AttentionPool, ConvBlock, band_edges

DEFAULTS: dict = {
    "band_fractions": [0.25, 0.5, 0.25],
    "channels": [16, 32],
    "band_dim": 64,
    "lstm_hidden": 64,
    "dropout": 0.3,
}


class BandEncoder(nn.Module):
    """A small CNN over one band: ``(B, 1, F_band, T) -> (B, T / 2**len(channels), band_dim)``."""

    def __init__(self, channels: list[int], band_dim: int) -> None:
        super().__init__()
        blocks = []
        in_ch = 1
        for out_ch in channels:
            blocks.append(ConvBlock(in_ch, out_ch, pool=(2, 2)))
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
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``."""

    __constants__ = ["edges"]

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        self.edges = band_edges(cfg.n_mels, list(s["band_fractions"]))
        self.input_norm = nn.BatchNorm1d(cfg.n_mels)
        self.encoders = nn.ModuleList(
            [BandEncoder(list(s["channels"]), int(s["band_dim"])) for _ in range(len(self.edges) - 1)]
        )
        self.band_attention = BandAttention(int(s["band_dim"]))
        hidden = int(s["lstm_hidden"])
        self.lstm = nn.LSTM(int(s["band_dim"]), hidden, batch_first=True, bidirectional=True)
        self.pool = AttentionPool(2 * hidden)
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.head = nn.Linear(2 * hidden, cfg.n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(logmel).unsqueeze(1)  # (B, 1, n_mels, T)
        outs: list[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            outs.append(encoder(x[:, :, self.edges[i] : self.edges[i + 1], :]))  # (B, T', D)
        bands = torch.stack(outs, dim=2)  # (B, T', bands, D)
        h = self.band_attention(bands)  # (B, T', D)
        h, _ = self.lstm(h)  # (B, T', 2H)
        return self.head(self.dropout(self.pool(h)))
