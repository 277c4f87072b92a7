"""Closed-form training of ``clip_stats`` (``models.arch.clip_stats``): statistics of the training windows,
then an L2-regularised logistic regression (``train.baseline.LogisticBaseline``) per candidate weight
decay, the one the validation speakers score best kept.

The rows are the statistics of every training clip's streamer windows (clean, as the streamer cuts
them) plus ``passes`` passes of augmented training windows (``train.dataset.TrainWindows``: the deep
recipe's joins, time shifts, speed, gain, EQ, band limits, noise, reverberation and quantisation;
SpecAugment's masks are left out, as they would be statistics of the mask), so the fit sees the
channels a microphone brings. ``emostream train --arch clip_stats --epochs N`` runs it with N passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from rich.console import Console

from emostream.models.arch.clip_stats import ClipStats
from emostream.models.features import LogMel
from emostream.train.baseline import LogisticBaseline
from emostream.train.dataset import TrainWindows, clip_windows, progress_bar

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)
"""The candidate L2 weights of the logistic regression; the validation speakers pick one."""


@torch.inference_mode()
def window_statistics(model: ClipStats, logmel: LogMel, waves: np.ndarray) -> np.ndarray:
    """The model's statistics of a batch of windows ``(B, samples)``: ``(B, n_statistics)``."""
    return model.statistics(logmel(torch.as_tensor(waves, dtype=torch.float32))).numpy()


def training_rows(
    model: ClipStats,
    logmel: LogMel,
    windows: TrainWindows,
    passes: int,
    seed: int,
    console: Console | None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics and labels of every training clip's clean streamer windows, then of ``passes``
    augmented passes over the training clips (``TrainWindows.batches``, seeded by ``(seed, pass)``)."""
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    fc = windows.fc
    with progress_bar(console) as progress:
        task = progress.add_task(f"statistics of {len(windows)} clips' windows", total=len(windows))
        batch: list[np.ndarray] = []
        batch_y: list[int] = []
        for i, audio in enumerate(windows.audio):
            w = clip_windows(audio, fc)
            batch.append(w)
            batch_y += [int(windows.labels[i])] * len(w)
            if sum(len(b) for b in batch) >= batch_size or i == len(windows) - 1:
                rows.append(window_statistics(model, logmel, np.concatenate(batch)))
                labels.append(np.asarray(batch_y, dtype=np.int64))
                batch, batch_y = [], []
            progress.advance(task)
        for p in range(passes):
            rng = np.random.default_rng([seed, p])
            task = progress.add_task(f"augmented pass {p + 1}/{passes}", total=len(windows))
            for waves, y in windows.batches(batch_size, rng):
                rows.append(window_statistics(model, logmel, waves))
                labels.append(np.asarray(y, dtype=np.int64))
                progress.advance(task, len(y))
    return np.concatenate(rows), np.concatenate(labels)


def load_fit(model: ClipStats, fit: LogisticBaseline) -> None:
    """Copy a fitted ``LogisticBaseline`` (standardisation and weights) into the model's buffers and layer."""
    assert fit.mean is not None and fit.scale is not None and fit.weight is not None and fit.bias is not None
    mean, scale = model.get_buffer("mean"), model.get_buffer("scale")
    with torch.no_grad():
        mean.copy_(torch.as_tensor(fit.mean, dtype=torch.float32))
        scale.copy_(torch.as_tensor(fit.scale, dtype=torch.float32))
        model.linear.weight.copy_(fit.weight.T)
        model.linear.bias.copy_(fit.bias)


def fit_clip_stats(
    model: ClipStats,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    validate: Callable[[ClipStats], tuple[float, dict[str, Any]]],
    console: Console,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> tuple[list[dict[str, Any]], float, int]:
    """Fit once per weight decay, score each on the validation speakers (``validate(model) -> (selected
    figure, record)``) and leave the best fit in ``model``; returns (history, best figure, best index + 1)."""
    if not np.isfinite(x).all():
        raise ValueError("the window statistics hold NaN or infinite values")
    history: list[dict[str, Any]] = []
    best: tuple[float, int, LogisticBaseline] | None = None
    for k, wd in enumerate(weight_decays):
        fit = LogisticBaseline(n_classes, weight_decay=float(wd)).fit(x, y)
        load_fit(model, fit)
        selected, record = validate(model)
        record = {"epoch": k + 1, "weight_decay": float(wd), "train_rows": int(len(y)), **record}
        history.append(record)
        improved = best is None or selected > best[0]
        if improved:
            best = (selected, k + 1, fit)
        console.print(
            f"weight decay {wd:g}: val UA {record['val_ua']:.3f} {record['val_ua_per_corpus']} "
            f"(selected {selected:.3f}) {'*' if improved else ' '}",
            highlight=False,
        )
    assert best is not None
    load_fit(model, best[2])
    return history, best[0], best[1]
