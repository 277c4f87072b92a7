"""Building blocks shared by the architectures: conv blocks, band split, attention pooling."""

from __future__ import annotations

import math
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


NORM_MODES = ("batch", "gain", "cmn")
"""Input normalisation of the log-mel: ``batch`` (BatchNorm1d, fixed statistics; level-dependent),
``gain`` (subtract the window's mean log energy over its active frames: any gain cancels exactly),
``cmn`` (subtract each mel bin's mean over the active frames: gain and any fixed EQ cancel)."""


DB_TO_LN = math.log(10.0) / 10.0  # the features' natural log of power: 1 dB = 0.2303


def floor_below_top(x: torch.Tensor, floor: float) -> torch.Tensor:
    """``(B, M, T)`` log-mel raised to at least ``floor`` (natural log) below each window's loudest bin."""
    top = x.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return torch.maximum(x, top - floor)


def present_frames(
    x: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-mel ``(B, M, T)`` -> the floored log-mel (``floor_below_top``), its loudest bin ``(B,)``, each
    frame's level (mean log-mel) ``(B, T)`` and the present frames ``(B, T)``: those above the floor, so
    zero padding and digital silence are left out."""
    floored = floor_below_top(x, floor)
    top = floored.amax(dim=(1, 2))
    energy = floored.mean(dim=1)
    present = (energy > (top - floor).unsqueeze(1) + 1e-3).to(x.dtype)
    return floored, top, energy, present


class WindowNorm(nn.Module):
    """Per-window normalisation of natural-log mel ``(B, M, T)`` computed inside the model.

    1. A floor relative to the window's loudest bin: ``x = max(x, top - floor_db)``, so zero padding
       and digital silence sit at the same place relative to the speech at any level.
    2. Active frames: those whose mean log-mel is within ``active_db`` of the loudest frame.
    3. ``gain``: subtract the mean over active frames and all bins; ``cmn``: per bin.
    4. A learned per-bin affine (``scale``, ``bias``), like BatchNorm's, but no running statistics.

    Every step is relative to the window itself, so scaling the audio by any gain (within float range
    and above the absolute ``log_floor`` of the features) leaves the output unchanged. Returns the
    normalised log-mel and the active-frame mask ``(B, T)`` (1.0 active, 0.0 silence/padding).
    """

    def __init__(self, n_mels: int, mode: str = "gain", floor_db: float = 60.0, active_db: float = 30.0) -> None:
        super().__init__()
        if mode not in ("gain", "cmn"):
            raise ValueError(f"WindowNorm mode must be gain or cmn, got {mode!r}")
        self.per_bin = mode == "cmn"
        self.floor = float(floor_db) * DB_TO_LN
        self.active = float(active_db) * DB_TO_LN
        self.scale = nn.Parameter(torch.full((n_mels,), 0.25))
        self.bias = nn.Parameter(torch.zeros(n_mels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = floor_below_top(x, self.floor)
        frame = x.mean(dim=1)  # (B, T)
        mask = (frame > frame.amax(dim=1, keepdim=True) - self.active).to(x.dtype)  # (B, T)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        mean = (x * mask.unsqueeze(1)).sum(dim=2) / count  # (B, M)
        if not self.per_bin:
            mean = mean.mean(dim=1, keepdim=True)  # (B, 1)
        y = (x - mean.unsqueeze(2)) * self.scale.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return y, mask


class SpectralStats(nn.Module):
    """What the statistics baseline (``train.baseline``) sees, per window, inside the model:
    ``(B, M, T), (B, T) -> (B, 3M)``.

    Over the active frames (``WindowNorm``'s mask; the same floor ``floor_db`` below the loudest bin):
    each bin's mean relative to the window's mean log energy (the spectral envelope, which per-bin
    normalisation (``cmn``) removes from the network's input; the gain cancels here too), each bin's
    standard deviation, and the RMS of each bin's frame-to-frame change; then a LayerNorm.
    """

    def __init__(self, n_mels: int, floor_db: float = 60.0) -> None:
        super().__init__()
        self.floor = float(floor_db) * DB_TO_LN
        self.norm = nn.LayerNorm(3 * n_mels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = floor_below_top(x, self.floor)
        w = mask.unsqueeze(1)  # (B, 1, T)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        mean = (x * w).sum(dim=2) / count  # (B, M)
        envelope = mean - mean.mean(dim=1, keepdim=True)
        centred = x - mean.unsqueeze(2)
        std = torch.sqrt((centred * centred * w).sum(dim=2) / count + 1e-6)
        d = x[:, :, 1:] - x[:, :, :-1]
        wd = w[:, :, 1:] * w[:, :, :-1]
        d_count = wd.sum(dim=2).clamp(min=1.0)  # (B, 1)
        d_rms = torch.sqrt((d * d * wd).sum(dim=2) / d_count + 1e-6)
        return self.norm(torch.cat([envelope, std, d_rms], dim=1))


def downsample_mask(mask: torch.Tensor, factor: int, n_out: int) -> torch.Tensor:
    """A frame mask ``(B, T)`` at the time resolution after pooling by ``factor``: ``(B, n_out)``;
    an output step is active when any of its input frames is."""
    pooled = torch.nn.functional.max_pool1d(mask.unsqueeze(1), kernel_size=factor, stride=factor, ceil_mode=True)
    return pooled[:, 0, :n_out]


class MaskedStatsPool(nn.Module):
    """Attentive statistics pooling over the active steps only: ``(B, T, D), (B, T) -> (B, 2D)``
    (attention-weighted mean and standard deviation; padding and silence get no weight)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).squeeze(2) + (mask - 1.0) * 1e4  # (B, T); inactive steps -> -1e4
        weights = torch.softmax(scores, dim=1).unsqueeze(2)  # (B, T, 1)
        mean = (weights * x).sum(dim=1)
        var = (weights * x * x).sum(dim=1) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=1)


class PitchTrack(nn.Module):
    """The features' pitch rows (``models.features.pitch_rows``) for the network: ``(B, 2, T)`` periodicity and
    log2 F0, with the active-frame mask ``(B, T)`` -> per-step features at the BiLSTM's rate ``(B, n_out, dim)``
    and the window's pitch statistics ``(B, 4)``.

    A frame counts as voiced (soft weight ``v``) when it is active and its periodicity is high (0 at 0.4,
    1 at 0.8). Per frame: ``v``, the periodicity over active frames, ``v * F0``, ``v * (F0 - the window's
    voiced mean)`` (the contour relative to the speaker's register) and ``|dF0|`` between voiced frames
    (clamped at half an octave); averaged over each ``factor`` frames and projected. Statistics, as the
    baseline's: voiced share of the active frames, voiced mean and standard deviation of F0, mean ``|dF0|``;
    through a BatchNorm (fixed statistics at inference). Pitch does not depend on the gain, so neither
    does anything here. ``absolute=False`` leaves out the two that say how high the voice is (``v * F0``
    and the mean F0), keeping only pitch relative to the window's own mean: ``(B, n_out, dim)``, ``(B, 3)``.
    """

    __constants__ = ["absolute"]

    def __init__(self, factor: int, dim: int, absolute: bool = True) -> None:
        super().__init__()
        self.factor = factor
        self.absolute = absolute
        self.n_stats = 4 if absolute else 3
        self.proj = nn.Linear(5 if absolute else 4, dim)
        self.stats_norm = nn.BatchNorm1d(self.n_stats)

    def forward(self, rows: torch.Tensor, mask: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = rows[:, 0, :]
        f0 = rows[:, 1, :]
        v = mask * ((p - 0.4) / 0.4).clamp(0.0, 1.0)  # (B, T)
        n_voiced = v.sum(dim=1, keepdim=True)
        count = n_voiced.clamp(min=1e-3)
        mean = (v * f0).sum(dim=1, keepdim=True) / count
        rel = v * (f0 - mean)
        pair = v[:, 1:] * v[:, :-1]
        step = (f0[:, 1:] - f0[:, :-1]).abs().clamp(max=0.5) * pair
        step = torch.cat([torch.zeros_like(step[:, :1]), step], dim=1)  # (B, T)
        if self.absolute:
            per_frame = torch.stack([v, p * mask, v * f0, rel, step], dim=1)  # (B, 5, T)
        else:
            per_frame = torch.stack([v, p * mask, rel, step], dim=1)  # (B, 4, T)
        pooled = torch.nn.functional.avg_pool1d(per_frame, self.factor, self.factor, ceil_mode=True)[:, :, :n_out]
        steps = torch.relu(self.proj(pooled.transpose(1, 2)))  # (B, n_out, dim)
        share = n_voiced / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        std = torch.sqrt((rel * rel).sum(dim=1, keepdim=True) / count + 1e-6)
        jump = step.sum(dim=1, keepdim=True) / pair.sum(dim=1, keepdim=True).clamp(min=1e-3)
        if self.absolute:
            stats = self.stats_norm(torch.cat([share, mean * (n_voiced > 0).to(mean.dtype), std, jump], dim=1))
        else:
            stats = self.stats_norm(torch.cat([share, std, jump], dim=1))
        return steps, stats


class FoldClasses(nn.Module):
    """Merge classes that were trained apart: output ``j``'s probability is the sum of the probabilities
    of the head's classes in ``groups[j]`` (``logsumexp`` of their logits, so a softmax over the outputs
    gives exactly those sums). Training uses ``inner`` (all head classes); export and inference the fold.
    """

    def __init__(self, inner: nn.Module, groups: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self.inner = inner
        n_head = sum(len(group) for group in groups)
        log_mask = torch.full((len(groups), n_head), -1e4)  # exp(-1e4) == 0 in float32
        for j, group in enumerate(groups):
            log_mask[j, list(group)] = 0.0
        self.register_buffer("log_mask", log_mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return torch.logsumexp(logits.unsqueeze(1) + self.log_mask, dim=-1)
