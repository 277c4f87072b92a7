"""cnn_bilstm_attn: two conv blocks, a BiLSTM over time and attention pooling (the CNN-BiLSTM-attention reference system of ../shared/REFERENCES.md)."""

from __future__ import annotations

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import AttentionPool, conv_stack

DEFAULTS: dict = {
    "channels": [32, 64],
    "conv_dropout": 0.2,
    "lstm_hidden": 128,
    "dropout": 0.2,
}


class ReluBnBlock(nn.Module):
    """Conv3x3 -> ReLU -> BatchNorm -> Dropout2d -> MaxPool 2x2 (the reference's order: ReLU before BN)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(out_ch)
        self.drop = nn.Dropout2d(dropout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.drop(self.bn(self.act(self.conv(x)))))


class CnnBiLSTMAttn(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``; ~2.25 M parameters at 128 mels.

    Each conv block halves frequency and time; the frequency axis is then flattened into the features
    of each time step (``channels[-1] * n_mels / 4``) for the BiLSTM.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        channels = [int(c) for c in s["channels"]]
        dropout = float(s["conv_dropout"])
        self.blocks, in_ch = conv_stack(channels, lambda i, o: ReluBnBlock(i, o, dropout))
        n_freq = cfg.n_mels // 2 ** len(channels)
        if n_freq < 1:
            raise ValueError(f"n_mels={cfg.n_mels} is too small for {len(channels)} 2x2 poolings")
        hidden = int(s["lstm_hidden"])
        self.lstm = nn.LSTM(in_ch * n_freq, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.pool = AttentionPool(2 * hidden)
        self.head = nn.Linear(2 * hidden, cfg.n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        h = self.blocks(logmel.unsqueeze(1))  # (B, C, F', T')
        h = h.permute(0, 3, 1, 2).flatten(2)  # (B, T', C * F')
        h, _ = self.lstm(h)  # (B, T', 2H)
        h = self.pool(self.dropout(h))  # (B, 2H)
        return self.head(h)
