"""Building blocks shared by the architectures: conv blocks, band split, attention pooling."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def band_edges(n_mels: int, fractions: list[float]) -> list[int]:
    """Mel-bin boundaries for bands with the given fractions (e.g. 25/50/25 %): ``[0, e1, e2, n_mels]``."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"band fractions must sum to 1, got {fractions}")
    edges = [0]
    acc = 0.0
    for frac in fractions[:-1]:
        acc += frac
        edges.append(round(acc * n_mels))
    edges.append(n_mels)
    if any(b - a < 4 for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"every band needs >= 4 mel bins, got edges {edges}")
    return edges


def conv_stack(channels: list[int], make_block: Callable[[int, int], nn.Module]) -> tuple[nn.Sequential, int]:
    """Blocks from 1 input channel through ``channels`` in turn; returns the stack and its output channels."""
    blocks = []
    in_ch = 1
    for out_ch in channels:
        blocks.append(make_block(in_ch, out_ch))
        in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


class ConvBlock(nn.Module):
    """Conv3x3 -> BatchNorm -> ReLU (-> Dropout2d) -> MaxPool."""

    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int], dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()
        self.drop = nn.Dropout2d(dropout)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.drop(self.act(self.bn(self.conv(x)))))


class AttentionPool(nn.Module):
    """Softmax attention over time: ``(B, T, D) -> (B, D)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x), dim=1)  # (B, T, 1)
        return (weights * x).sum(dim=1)
