"""acnt: residual CNN blocks, a linear projection, sinusoidal positions and a Transformer encoder (the CNN-Transformer reference system of ../shared/REFERENCES.md)."""

from __future__ import annotations

import math

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import conv_stack

DEFAULTS: dict = {
    "channels": [16, 32, 64, 128],
    "cnn_dropout": 0.1,
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 2,
    "ff_dim": 2048,
    "dropout": 0.1,
}


class ResidualBlock(nn.Module):
    """``relu(main(x) + shortcut(x))`` -> MaxPool 2x2 -> Dropout2d; ``(B, C_in, F, T) -> (B, C_out, F/2, T/2)``.

    ``main`` is Conv3x3-BN-ReLU-Conv3x3-BN; ``shortcut`` is the identity, or a 1x1 conv + BN when the
    channel count changes. (The reference computed a residual and never added it.)
    """

    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        if in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False), nn.BatchNorm2d(out_ch))
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.main(x) + self.shortcut(x))
        return self.drop(self.pool(h))


class SinusoidalPositions(nn.Module):
    """Adds the sinusoidal positional encoding (Vaswani et al.) for any length: ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even, got {d_model}")
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (D/2,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv_freq = self.inv_freq
        assert isinstance(inv_freq, torch.Tensor)  # for the type checker (a class annotation breaks scripting)
        positions = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)
        angles = positions.unsqueeze(1) * inv_freq.to(x.dtype).unsqueeze(0)  # (T, D/2)
        pe = torch.stack([torch.sin(angles), torch.cos(angles)], dim=2).flatten(1)  # (T, D): sin, cos interleaved
        return x + pe.unsqueeze(0)


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain ops: ``(B, T, D) -> (B, T, D)``.

    Written out (instead of ``nn.MultiheadAttention``) so that the ONNX export keeps batch and time
    dynamic: the fused path bakes the traced ``batch * heads`` and length into its reshapes.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(2, (3, self.n_heads, self.head_dim))  # (B, T, 3, H, hd)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.scale, dim=-1)  # (B, H, T, T)
        h = torch.matmul(self.drop(weights), v)  # (B, H, T, hd)
        return self.out(h.transpose(1, 2).flatten(2))  # (B, T, H * hd)


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (as ``nn.TransformerEncoderLayer``'s default): ``(B, T, D)``."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop1(self.attn(x)))
        return self.norm2(x + self.drop2(self.ff(x)))


class ACNT(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``.

    Residual CNN (each block halves frequency and time) -> flatten frequency -> Linear to ``d_model``
    -> positions -> Transformer encoder -> mean over time -> Linear head.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        channels = [int(c) for c in s["channels"]]
        dropout = float(s["cnn_dropout"])
        self.blocks, in_ch = conv_stack(channels, lambda i, o: ResidualBlock(i, o, dropout))
        n_freq = cfg.n_mels // 2 ** len(channels)
        if n_freq < 1:
            raise ValueError(f"n_mels={cfg.n_mels} is too small for {len(channels)} 2x2 poolings")
        d_model = int(s["d_model"])
        self.proj = nn.Linear(in_ch * n_freq, d_model)
        self.positions = SinusoidalPositions(d_model)
        self.encoder = nn.Sequential(
            *[
                EncoderLayer(d_model, int(s["n_heads"]), int(s["ff_dim"]), float(s["dropout"]))
                for _ in range(int(s["n_layers"]))
            ]
        )
        self.head = nn.Linear(d_model, cfg.n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        h = self.blocks(logmel.unsqueeze(1))  # (B, C, F', T')
        h = h.permute(0, 3, 1, 2).flatten(2)  # (B, T', C * F')
        h = self.positions(self.proj(h))  # (B, T', D)
        h = self.encoder(h)  # (B, T', D)
        return self.head(h.mean(dim=1))  # (B, D) -> (B, n_classes)
