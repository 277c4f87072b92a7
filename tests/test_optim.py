"""The learning-rate schedules on runs of every length, down to one optimiser step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emostream.train.loop import TrainConfig
from emostream.train.optim import schedule


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 40])
def test_schedules_run_any_number_of_steps(name: str, steps: int) -> None:
    """A tiny run (one epoch of a handful of clips is one or two steps) trains instead of dividing by
    zero in OneCycleLR; longer runs warm up to ``lr`` and anneal below it."""
    cfg = dataclasses.replace(TrainConfig(), schedule=name, epochs=1, lr=1e-3, warmup_epochs=0.25)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = schedule(optimizer, cfg, steps_per_epoch=steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert len(rates) == steps and all(0.0 < r <= cfg.lr * (1 + 1e-6) for r in rates)
    if steps >= 5:
        assert max(rates) == pytest.approx(cfg.lr, rel=0.05) and rates[-1] < 0.5 * cfg.lr
