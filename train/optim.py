"""The learning-rate schedule and the moving average of the weights that training validates and keeps."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from emostream.train.config import TrainConfig


def schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, max(1, round(cfg.warmup_epochs * steps_per_epoch)))
    if cfg.schedule == "onecycle" and total < 3:
        # OneCycleLR needs a warm-up of two steps or more and a step after it (a warm-up of one step ends
        # its first phase at step 0 and divides by zero): a run this short (a handful of clips, one
        # epoch) has no schedule to follow and trains at ``lr``
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=max(2, warmup) / total, anneal_strategy="cos"
        )
    if cfg.schedule == "cosine":

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use onecycle or cosine")


class EmaWeights:
    """An exponential moving average of a model's weights (buffers copied), warmed up over the first
    steps: decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for avg, cur in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(cur.detach(), 1.0 - d)
        for avg_b, cur_b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_b.copy_(cur_b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
