"""Closed-form training of ``clip_stats`` (``models.arch.clip_stats``): statistics of the training windows,
then an L2-regularised logistic regression (``train.baseline.LogisticBaseline``) per candidate weight
decay; speaker-grouped cross-validation on the training speakers picks the weight decay.

The rows are the statistics of every training clip's streamer windows (clean, as the streamer cuts
them) plus ``passes`` passes of augmented training windows (``train.dataset.TrainWindows``: the deep
recipe's joins, time shifts, speed, gain, EQ, band limits, noise, reverberation and quantisation;
SpecAugment's masks are left out, as they would be statistics of the mask), so the fit sees the
channels a microphone brings. ``emostream train --arch clip_stats --epochs N`` runs it with N passes.

Choosing the weight decay: the training speakers are dealt into ``CV_FOLDS`` folds (each corpus's
speakers in turn, so every fold holds some of each corpus); per fold a fit on the other folds' rows
scores the fold's clips as the streamer would (the mean of a clip's clean windows' probabilities), UA
per corpus, and the folds' mean of the corpora's mean is the figure that picks. The six validation
speakers picked the strongest decay offered every time and ranked the decays unlike held-out speakers
and held-out corpora (docs/results.md, 2026-12-05); they are still scored and reported for every decay.
With fewer than two training speakers the validation speakers pick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console

from emostream.models.arch.clip_stats import ClipStats
from emostream.models.features import LogMel
from emostream.train.baseline import LogisticBaseline
from emostream.train.dataset import TrainWindows, clip_windows, progress_bar
from emostream.train.metrics import compute_metrics

WEIGHT_DECAYS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""The candidate L2 weights of the logistic regression; cross-validation on the training speakers picks one."""
CV_FOLDS = 5
"""Speaker folds of the cross-validation (fewer when there are fewer training speakers)."""


@dataclass(frozen=True)
class Rows:
    """Window statistics ``x (N, n_statistics)``, labels ``y``, each row's training clip ``clip`` and
    whether it is a clean streamer window (``clean``) or an augmented one."""

    x: np.ndarray
    y: np.ndarray
    clip: np.ndarray
    clean: np.ndarray


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
) -> Rows:
    """Statistics and labels of every training clip's clean streamer windows, then of ``passes``
    augmented passes over the training clips (``TrainWindows.indexed_batches``, seeded by ``(seed, pass)``)."""
    rows: list[np.ndarray] = []
    clips: list[np.ndarray] = []
    fc = windows.fc
    with progress_bar(console) as progress:
        task = progress.add_task(f"statistics of {len(windows)} clips' windows", total=len(windows))
        batch: list[np.ndarray] = []
        batch_clips: list[int] = []
        for i, audio in enumerate(windows.audio):
            w = clip_windows(audio, fc)
            batch.append(w)
            batch_clips += [i] * len(w)
            if sum(len(b) for b in batch) >= batch_size or i == len(windows) - 1:
                rows.append(window_statistics(model, logmel, np.concatenate(batch)))
                clips.append(np.asarray(batch_clips, dtype=np.int64))
                batch, batch_clips = [], []
            progress.advance(task)
        n_clean = sum(len(c) for c in clips)
        for p in range(passes):
            rng = np.random.default_rng([seed, p])
            task = progress.add_task(f"augmented pass {p + 1}/{passes}", total=len(windows))
            for idx, waves, _ in windows.indexed_batches(batch_size, rng):
                rows.append(window_statistics(model, logmel, waves))
                clips.append(np.asarray(idx, dtype=np.int64))
                progress.advance(task, len(idx))
    clip = np.concatenate(clips)
    clean = np.zeros(len(clip), dtype=bool)
    clean[:n_clean] = True
    return Rows(np.concatenate(rows), windows.labels[clip], clip, clean)


def speaker_folds(speakers: Sequence[str], corpora: Sequence[str], k: int = CV_FOLDS, seed: int = 0) -> np.ndarray:
    """Each clip's fold (``0..k-1``, speakers never split): per corpus (in order of appearance) its speakers
    shuffled by ``seed`` and dealt in turn, the deal continuing across corpora so small corpora spread out.
    ``k`` is capped at the number of speakers; one speaker gives every clip fold 0."""
    ordered: dict[str, list[str]] = {}
    for spk, corpus in zip(speakers, corpora, strict=True):
        members = ordered.setdefault(corpus, [])
        if spk not in members:
            members.append(spk)
    n_speakers = sum(len(v) for v in ordered.values())
    k = max(1, min(k, n_speakers))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    turn = 0
    for corpus in ordered:
        members = sorted(ordered[corpus])
        for j in rng.permutation(len(members)):
            fold_of[members[int(j)]] = turn % k
            turn += 1
    return np.asarray([fold_of[s] for s in speakers], dtype=np.int64)


def mean_corpus_ua(y: np.ndarray, pred: np.ndarray, corpora: np.ndarray, n_classes: int) -> float:
    """The mean over corpora of each corpus's UA (``train.metrics``: recall averaged over the classes present in it)."""
    labels = tuple(str(c) for c in range(n_classes))
    scores = [
        compute_metrics(y[corpora == corpus], pred[corpora == corpus], labels).ua
        for corpus in dict.fromkeys(corpora.tolist())
    ]
    return float(np.mean(scores))


def clip_predictions(fit: LogisticBaseline, rows: Rows, keep: np.ndarray, n_clips: int) -> np.ndarray:
    """Per clip, the argmax of the mean probability of its clean rows among ``keep`` (-1 for clips with none)."""
    sel = keep & rows.clean
    probs = fit.predict_proba(rows.x[sel])
    total = np.zeros((n_clips, probs.shape[1]))
    np.add.at(total, rows.clip[sel], probs)
    seen = np.bincount(rows.clip[sel], minlength=n_clips) > 0
    return np.where(seen, total.argmax(axis=1), -1)


def cross_validated_ua(
    rows: Rows, labels: np.ndarray, corpora: Sequence[str], folds: np.ndarray, n_classes: int, weight_decay: float
) -> float:
    """Speaker-grouped cross-validation of one weight decay (module docstring): the folds' mean of the
    mean per-corpus clip UA. ``labels``, ``corpora`` and ``folds`` are per training clip."""
    corpus = np.asarray(corpora)
    scores = []
    for f in np.unique(folds):
        held = folds[rows.clip] == f
        fit = LogisticBaseline(n_classes, weight_decay=float(weight_decay)).fit(rows.x[~held], rows.y[~held])
        pred = clip_predictions(fit, rows, held, len(labels))
        in_fold = folds == f
        scores.append(mean_corpus_ua(labels[in_fold], pred[in_fold], corpus[in_fold], n_classes))
    return float(np.mean(scores))


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
    rows: Rows,
    windows: TrainWindows,
    n_classes: int,
    validate: Callable[[ClipStats], tuple[float, dict[str, Any]]],
    console: Console,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> tuple[list[dict[str, Any]], float, int]:
    """Per weight decay: cross-validate on the training speakers (``windows.speakers``), fit on every row
    and score the validation speakers (``validate(model) -> (figure, record)``); leave the fit with the best
    cross-validated UA in ``model`` (the best validation figure when there is one training speaker).
    Returns (history, the kept fit's validation figure, kept index + 1)."""
    if not np.isfinite(rows.x).all():
        raise ValueError("the window statistics hold NaN or infinite values")
    folds = speaker_folds(windows.speakers, windows.corpora)
    use_cv = len(np.unique(folds)) > 1
    if use_cv:
        console.print(f"cross-validation: {len(np.unique(folds))} folds of {len(set(windows.speakers))} training speakers")
    history: list[dict[str, Any]] = []
    best: tuple[float, int, LogisticBaseline, float] | None = None
    for k, wd in enumerate(weight_decays):
        cv = cross_validated_ua(rows, windows.labels, windows.corpora, folds, n_classes, wd) if use_cv else None
        fit = LogisticBaseline(n_classes, weight_decay=float(wd)).fit(rows.x, rows.y)
        load_fit(model, fit)
        selected, record = validate(model)
        record = {
            "epoch": k + 1,
            "weight_decay": float(wd),
            "train_rows": int(len(rows.y)),
            **({"cv_ua": round(cv, 4)} if cv is not None else {}),
            **record,
        }
        history.append(record)
        key = cv if cv is not None else selected
        improved = best is None or key > best[0]
        if improved:
            best = (key, k + 1, fit, selected)
        console.print(
            f"weight decay {wd:g}: "
            + (f"cross-validated UA {cv:.3f}, " if cv is not None else "")
            + f"val UA {record['val_ua']:.3f} {record['val_ua_per_corpus']} {'*' if improved else ' '}",
            highlight=False,
        )
    assert best is not None
    load_fit(model, best[2])
    return history, best[3], best[1]
