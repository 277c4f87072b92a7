"""clip_stats: the statistics baseline as a streaming model (window statistics, standardised, one linear layer).

The statistics baseline (``train.baseline``: per-clip log-mel and pitch statistics + logistic regression)
scores as well as the deep models on held-out speakers and errs on other clips, so the two together
beat either (docs/results.md). This is its streaming form: the same kind of statistics computed per
5-s window from the model's own features inside the model file, so the streamer, ``emostream
evaluate``, TorchScript and ONNX run it like any model and an ensemble (``models.arch.ensemble``) can
hold it beside a deep model.

Per window, from the natural-log mel ``(B, n_mels, T)`` (and with ``pitch`` the features' two pitch
rows, ``models.features.pitch_rows``):

- present frames: above the window's floor (``floor_db`` below its loudest bin), so zero padding and
  digital silence are left out; active frames: present, with a mean log-mel within ``active_db`` of
  the loudest frame's;
- over the active frames, per mel bin: the mean relative to the window's mean level, the standard
  deviation, and the standard deviation of the change between consecutive active frames (3 x n_mels);
- frame level relative to the loudest frame: 10th, 50th and 90th percentile and mean over the present
  frames, standard deviation over the active ones, and the active share of the present frames (6);
- with ``pitch``: the voiced share of the active frames (a soft voicing weight, periodicity 0.4 -> 0,
  0.8 -> 1), the voiced mean, standard deviation, 10th and 90th percentile of log2 F0, and the mean
  and standard deviation of its change between consecutive voiced frames (7).

Every statistic is relative to the window itself, so a gain changes nothing (above the features'
absolute ``log_floor``). The statistics are standardised with the training windows' mean and
deviation (buffers ``mean``, ``scale``) and one linear layer gives the logits. It has no gradient
training: ``emostream train --arch clip_stats`` fits it in closed form (``train.statsfit``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import DB_TO_LN, floor_below_top

DEFAULTS: dict[str, Any] = {
    "pitch": True,
    "floor_db": 60.0,
    "active_db": 30.0,
}

ENERGY_STATS = 6
PITCH_STATS = 7


def n_statistics(n_mels: int, pitch: bool) -> int:
    """How many statistics ``WindowStatistics`` computes per window."""
    return 3 * n_mels + ENERGY_STATS + (PITCH_STATS if pitch else 0)


def masked_quantiles(x: torch.Tensor, mask: torch.Tensor, quantiles: list[float]) -> torch.Tensor:
    """Per row of ``x (B, T)``, the given quantiles of the entries where ``mask (B, T)`` is set (nearest
    rank): ``(B, len(quantiles))``; 0 for a row with none set."""
    keep = mask > 0.5
    filled = torch.where(keep, x, torch.full_like(x, 1e9))
    ordered, _ = torch.sort(filled, dim=1)
    n = keep.sum(dim=1, keepdim=True)  # (B, 1)
    last = (n - 1).clamp(min=0).to(x.dtype)
    picks: list[torch.Tensor] = []
    for q in quantiles:
        index = torch.round(last * q).to(torch.long)
        picks.append(torch.gather(ordered, 1, index))
    out = torch.cat(picks, dim=1)
    return torch.where(n > 0, out, torch.zeros_like(out))


def _masked_mean_std(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over the last axis: ``x (..., T)``, weights ``w`` broadcastable."""
    total = w.sum(dim=-1).clamp(min=1e-6)
    mean = (x * w).sum(dim=-1) / total
    var = ((x - mean.unsqueeze(-1)).square() * w).sum(dim=-1) / total
    return mean, torch.sqrt(var + 1e-8)


class WindowStatistics(nn.Module):
    """Features ``(B, n_mels [+ 2], T)`` -> statistics ``(B, n_statistics)`` (module docstring)."""

    __constants__ = ["n_mels", "pitch", "floor", "active"]

    def __init__(self, n_mels: int, pitch: bool, floor_db: float, active_db: float) -> None:
        super().__init__()
        self.n_mels = int(n_mels)
        self.pitch = bool(pitch)
        self.floor = float(floor_db) * DB_TO_LN
        self.active = float(active_db) * DB_TO_LN

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = floor_below_top(features[:, : self.n_mels, :], self.floor)
        top = x.amax(dim=(1, 2))  # (B,)
        energy = x.mean(dim=1)  # (B, T)
        present = (energy > (top - self.floor).unsqueeze(1) + 1e-3).to(x.dtype)
        loudest = torch.where(present > 0.5, energy, torch.full_like(energy, -1e9)).amax(dim=1, keepdim=True)
        active = present * (energy > loudest - self.active).to(x.dtype)  # (B, T)
        n_active = active.sum(dim=1).clamp(min=1.0)  # (B,)
        w = active.unsqueeze(1)  # (B, 1, T)

        bin_mean, bin_std = _masked_mean_std(x, w)  # (B, M) each
        level = bin_mean.mean(dim=1, keepdim=True)
        pair = active[:, 1:] * active[:, :-1]
        _, delta_std = _masked_mean_std(x[:, :, 1:] - x[:, :, :-1], pair.unsqueeze(1))

        rel = energy - loudest  # (B, T), <= 0 on present frames
        quant = masked_quantiles(rel, present, [0.1, 0.5, 0.9])
        rel_mean, _ = _masked_mean_std(rel, present)
        _, rel_std_active = _masked_mean_std(rel, active)
        share = active.sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
        parts = [
            bin_mean - level,
            bin_std,
            delta_std,
            quant,
            rel_mean.unsqueeze(1),
            rel_std_active.unsqueeze(1),
            share.unsqueeze(1),
        ]
        if self.pitch:
            periodicity = features[:, self.n_mels, :]
            f0 = features[:, self.n_mels + 1, :]
            voiced = active * ((periodicity - 0.4) / 0.4).clamp(0.0, 1.0)  # (B, T)
            f0_mean, f0_std = _masked_mean_std(f0, voiced)
            f0_q = masked_quantiles(f0, (voiced > 0.5).to(x.dtype), [0.1, 0.9])
            step_w = voiced[:, 1:] * voiced[:, :-1]
            step_mean, step_std = _masked_mean_std((f0[:, 1:] - f0[:, :-1]).abs(), step_w)
            parts += [
                (voiced.sum(dim=1) / n_active).unsqueeze(1),
                f0_mean.unsqueeze(1),
                f0_std.unsqueeze(1),
                f0_q,
                step_mean.unsqueeze(1),
                step_std.unsqueeze(1),
            ]
        return torch.cat(parts, dim=1)


class ClipStats(nn.Module):
    """Features ``(B, n_mels [+ 2 with pitch], T)`` -> logits ``(B, n_classes)``: standardised window
    statistics through one linear layer (module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        self.statistics = WindowStatistics(cfg.n_mels, bool(s["pitch"]), float(s["floor_db"]), float(s["active_db"]))
        n = n_statistics(cfg.n_mels, bool(s["pitch"]))
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.linear = nn.Linear(n, cfg.n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (self.statistics(features) - self.mean) / self.scale
        return self.linear(z)
