"""Training of ``clip_stats`` (``models.arch.clip_stats``) on its window statistics: statistics of the
training windows, then per candidate either an L2-regularised logistic regression in closed form
(``train.baseline.LogisticBaseline``; ``hidden`` 0, candidates are weight decays) or a bag of small
networks of one hidden layer (``BaggedMLP``; ``hidden`` > 0, candidates are epoch counts);
speaker-grouped cross-validation on the training speakers picks the candidate.

The rows are the statistics of every training clip's streamer windows (clean, as the streamer cuts
them) plus ``passes`` passes of augmented training windows (``train.dataset.TrainWindows``: the deep
recipe's joins, time shifts, speed, gain, EQ, band limits, noise, reverberation and quantisation,
and the mel warp where the recipe turns it on, ``p_warp``; SpecAugment's masks are left out, as they
would be statistics of the mask), so the fit sees the channels a microphone brings. ``emostream train
--arch clip_stats --epochs N`` runs it with N passes.

The heads of a bag are fitted apart (their own seed, initialisation and order of rows) with AdamW,
input and hidden dropout and class-balanced cross-entropy, for a few epochs over the rows: how long
they train is what regularises them, so the cross-validation picks the epoch count
(``MLP_EPOCHS``). On the shipped split the bag of five 64-unit heads cross-validated 4.5 points above
the logistic regression on the same rows (docs/results.md, 2026-12-05 evening). With ``emostream train
--adversary W`` the heads train against a speaker classifier (``BaggedMLP``), each row's speaker given.

Choosing a candidate: the training speakers are dealt into ``CV_FOLDS`` folds (each corpus's
speakers in turn, so every fold holds some of each corpus); per fold a fit on the other folds' rows
scores the fold's clips as the streamer would (the mean of a clip's clean windows' probabilities), UA
per corpus, and the folds' mean of the corpora's mean is the figure that picks. The six validation
speakers picked the strongest decay offered every time and ranked the decays unlike held-out speakers
and held-out corpora (docs/results.md, 2026-12-05); they are still scored and reported for every decay.
With fewer than two training speakers the validation speakers pick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

import numpy as np
import torch
from rich.console import Console
from torch import nn

from emostream.models.arch.clip_stats import ClipStats
from emostream.models.features import LogMel, mel_centres_hz
from emostream.train.baseline import LogisticBaseline, standardise
from emostream.train.dataset import TrainWindows, clip_windows, progress_bar, to_float
from emostream.train.metrics import compute_metrics

WEIGHT_DECAYS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""The candidate L2 weights of the logistic regression; cross-validation on the training speakers picks one."""
ADVERSARY_HIDDEN = 64
"""Hidden units of ``BaggedMLP``'s speaker classifier (training only)."""
MLP_EPOCHS = (4, 8, 16)
"""The candidate epoch counts of a ``BaggedMLP``; cross-validation on the training speakers picks one."""
MLP_WEIGHT_DECAY = 1e-2
MLP_DROPOUT = (0.1, 0.3)
"""Dropout on the standardised statistics and on the hidden units while a head trains."""
CV_FOLDS = 5
"""Speaker folds of the cross-validation (fewer when there are fewer training speakers)."""


@dataclass(frozen=True)
class Rows:
    """Window statistics ``x (N, n_statistics)``, labels ``y``, each row's training clip ``clip``,
    whether it is a clean streamer window (``clean``) or an augmented one, and its clip's speaker as an
    index (``speaker``; the adversary's targets, ``BaggedMLP.adversary``)."""

    x: np.ndarray
    y: np.ndarray
    clip: np.ndarray
    clean: np.ndarray
    speaker: np.ndarray


class Fit(Protocol):
    """A classifier on window statistics: ``LogisticBaseline`` or ``BaggedMLP``."""

    def fit(self, x: np.ndarray, y: np.ndarray, domains: np.ndarray | None = None) -> Any: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient times ``-weight`` backward (gradient reversal)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


@dataclass
class BaggedMLP:
    """Standardisation + ``heads`` networks of one hidden layer (``hidden`` ReLU units), each fitted on
    every row from its own seed; the probability is the heads' mean (``models.arch.clip_stats``).

    With ``adversary`` > 0 and ``domains`` (each row's speaker index) given to ``fit``, each head trains
    beside a speaker classifier on its hidden units whose gradient reaches them reversed and scaled by
    ``adversary`` (ramped up from 0 over the steps, as in Ganin and Lempitsky's domain-adversarial
    training), which penalises hidden units that tell the training speakers apart. Where the speakers
    are a shortcut to the class, this generalises better to new speakers (``tests/test_clip_stats.py``);
    it does not erase the speaker: a probe trained afterwards on the hidden units still tells the
    speakers apart about as well as on the plain bag's (measured on synthetic rows, docs/results.md).
    The speaker classifier is training only; the exported heads are the same shape."""

    n_classes: int
    hidden: int = 64
    heads: int = 5
    epochs: int = 8
    weight_decay: float = MLP_WEIGHT_DECAY
    seed: int = 0
    batch_size: int = 256
    lr: float = 3e-3
    adversary: float = 0.0
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    nets: list[nn.Sequential] = field(default_factory=list)

    def fit(self, x: np.ndarray, y: np.ndarray, domains: np.ndarray | None = None) -> BaggedMLP:
        rows = standardise(x, y, self.n_classes)
        self.mean, self.scale, xt, yt = rows.mean, rows.scale, rows.x, rows.y
        loss_fn = nn.CrossEntropyLoss(weight=rows.class_weight)
        adversarial = self.adversary > 0 and domains is not None
        dt = torch.from_numpy(np.asarray(domains, dtype=np.int64)) if adversarial else None
        steps = self.epochs * -(-len(yt) // self.batch_size)
        self.nets = []
        for head in range(self.heads):
            gen = torch.Generator().manual_seed(self.seed * 1009 + head)
            torch.manual_seed(self.seed * 1009 + head)
            net = nn.Sequential(
                nn.Dropout(MLP_DROPOUT[0]),
                nn.Linear(xt.shape[1], self.hidden),
                nn.ReLU(),
                nn.Dropout(MLP_DROPOUT[1]),
                nn.Linear(self.hidden, self.n_classes),
            )
            speaker_head = (
                nn.Sequential(nn.Linear(self.hidden, ADVERSARY_HIDDEN), nn.ReLU(), nn.Linear(ADVERSARY_HIDDEN, int(dt.max()) + 1))
                if dt is not None
                else nn.Sequential()
            )
            params = [*net.parameters(), *speaker_head.parameters()]
            opt = torch.optim.AdamW(params, self.lr, weight_decay=self.weight_decay)
            step = 0
            for _ in range(self.epochs):
                order = torch.randperm(len(yt), generator=gen)
                for start in range(0, len(yt), self.batch_size):
                    b = order[start : start + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    hidden = net[:3](xt[b])
                    loss = loss_fn(net[3:](hidden), yt[b])
                    if dt is not None:
                        weight = self.adversary * (2.0 / (1.0 + math.exp(-10.0 * step / steps)) - 1.0)
                        loss = loss + nn.functional.cross_entropy(speaker_head(_Reverse.apply(hidden, weight)), dt[b])
                    loss.backward()
                    opt.step()
                    step += 1
            self.nets.append(net.eval())
        return self

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self.nets or self.mean is None or self.scale is None:
            raise RuntimeError("fit the heads first")
        xt = torch.from_numpy(((x - self.mean) / self.scale).astype(np.float32))
        return torch.stack([torch.softmax(net(xt), dim=1) for net in self.nets]).mean(dim=0).numpy()


@torch.inference_mode()
def window_statistics(
    model: ClipStats,
    logmel: LogMel,
    waves: np.ndarray,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """The model's statistics of a batch of windows ``(B, samples)``: ``(B, n_statistics)``; ``transform``
    (the augmented passes' mel warp, ``train.augment.Augmenter.warp``) acts on the features first."""
    features = logmel(torch.as_tensor(waves, dtype=torch.float32))
    return model.statistics(features if transform is None else transform(features)).numpy()


def training_rows(
    model: ClipStats,
    logmel: LogMel,
    windows: TrainWindows,
    passes: int,
    seed: int,
    console: Console | None,
    batch_size: int = 64,
) -> Rows:
    """Statistics and labels of every training clip's clean streamer windows (with the augmentation's
    ``line``, through it), then of ``passes`` augmented passes over the training clips
    (``TrainWindows.indexed_batches``, seeded by ``(seed, pass)``)."""
    rows: list[np.ndarray] = []
    clips: list[np.ndarray] = []
    fc = windows.fc
    with progress_bar(console) as progress:
        task = progress.add_task(f"statistics of {len(windows)} clips' windows", total=len(windows))
        batch: list[np.ndarray] = []
        batch_clips: list[int] = []
        for i, audio in enumerate(windows.audio):
            if windows.augmenter.config.line is not None:  # the clean windows through the line too
                audio = windows.augmenter.line(to_float(audio) if audio.dtype == np.int16 else audio)
            w = clip_windows(audio, fc)
            batch.append(w)
            batch_clips += [i] * len(w)
            if sum(len(b) for b in batch) >= batch_size or i == len(windows) - 1:
                rows.append(window_statistics(model, logmel, np.concatenate(batch)))
                clips.append(np.asarray(batch_clips, dtype=np.int64))
                batch, batch_clips = [], []
            progress.advance(task)
        n_clean = sum(len(c) for c in clips)
        centres = mel_centres_hz(logmel.cfg)
        for p in range(passes):
            rng = np.random.default_rng([seed, p])
            gen = torch.Generator().manual_seed(seed * 100003 + p)  # the warp's own draws (none when it is off)
            warp = partial(windows.augmenter.warp, generator=gen, centres_hz=centres)
            task = progress.add_task(f"augmented pass {p + 1}/{passes}", total=len(windows))
            for idx, waves, _ in windows.indexed_batches(batch_size, rng):
                rows.append(window_statistics(model, logmel, waves, warp))
                clips.append(np.asarray(idx, dtype=np.int64))
                progress.advance(task, len(idx))
    clip = np.concatenate(clips)
    clean = np.zeros(len(clip), dtype=bool)
    clean[:n_clean] = True
    index = {spk: k for k, spk in enumerate(dict.fromkeys(windows.speakers))}
    speaker = np.asarray([index[s] for s in windows.speakers], dtype=np.int64)[clip]
    return Rows(np.concatenate(rows), windows.labels[clip], clip, clean, speaker)


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


def clip_predictions(fit: Fit, rows: Rows, keep: np.ndarray, n_clips: int) -> np.ndarray:
    """Per clip, the argmax of the mean probability of its clean rows among ``keep`` (-1 for clips with none)."""
    sel = keep & rows.clean
    probs = fit.predict_proba(rows.x[sel])
    total = np.zeros((n_clips, probs.shape[1]))
    np.add.at(total, rows.clip[sel], probs)
    seen = np.bincount(rows.clip[sel], minlength=n_clips) > 0
    return np.where(seen, total.argmax(axis=1), -1)


def cross_validated_ua(
    rows: Rows, labels: np.ndarray, corpora: Sequence[str], folds: np.ndarray, n_classes: int, make: Callable[[], Fit]
) -> float:
    """Speaker-grouped cross-validation of one candidate, ``make()`` giving an unfitted classifier (module
    docstring): the folds' mean of the mean per-corpus clip UA. ``labels``, ``corpora`` and ``folds`` are
    per training clip."""
    corpus = np.asarray(corpora)
    scores = []
    for f in np.unique(folds):
        held = folds[rows.clip] == f
        fit = make()
        fit.fit(rows.x[~held], rows.y[~held], rows.speaker[~held])
        pred = clip_predictions(fit, rows, held, len(labels))
        in_fold = folds == f
        scores.append(mean_corpus_ua(labels[in_fold], pred[in_fold], corpus[in_fold], n_classes))
    return float(np.mean(scores))


def load_fit(model: ClipStats, fit: Fit) -> None:
    """Copy a fitted ``LogisticBaseline`` or ``BaggedMLP`` (standardisation and weights) into the model,
    whose head must be of the same kind and shape."""
    mean, scale = model.get_buffer("mean"), model.get_buffer("scale")
    with torch.no_grad():
        if isinstance(fit, BaggedMLP):
            if not model.mlp or model.n_heads != len(fit.nets) or fit.mean is None or fit.scale is None:
                raise ValueError("the model's head does not match the fitted bag")
            first = [cast(nn.Linear, net[1]) for net in fit.nets]
            last = [cast(nn.Linear, net[4]) for net in fit.nets]
            model.hidden.weight.copy_(torch.cat([layer.weight for layer in first]))
            model.hidden.bias.copy_(torch.cat([layer.bias for layer in first]))
            model.out_weight.copy_(torch.stack([layer.weight.T for layer in last]))
            model.out_bias.copy_(torch.stack([layer.bias for layer in last]).unsqueeze(1))
        else:
            assert isinstance(fit, LogisticBaseline)
            if model.mlp or fit.weight is None or fit.bias is None or fit.mean is None or fit.scale is None:
                raise ValueError("the model's head does not match the fitted logistic regression")
            model.linear.weight.copy_(fit.weight.T)
            model.linear.bias.copy_(fit.bias)
        mean.copy_(torch.as_tensor(fit.mean, dtype=torch.float32))
        scale.copy_(torch.as_tensor(fit.scale, dtype=torch.float32))


def candidates(
    model: ClipStats, n_classes: int, seed: int, adversary: float = 0.0
) -> list[tuple[dict[str, Any], Callable[[], Fit]]]:
    """What the cross-validation chooses among for this model's head: weight decays of the logistic
    regression, or epoch counts of the bag (``model``'s ``hidden`` and ``heads``; with the speaker
    adversary's weight ``adversary``), each with its record."""
    if adversary > 0 and not model.mlp:
        raise ValueError("the speaker adversary trains hidden layers: give clip_stats a bag of heads (hidden > 0)")
    if not model.mlp:
        return [
            ({"weight_decay": float(wd)}, partial(LogisticBaseline, n_classes, weight_decay=float(wd)))
            for wd in WEIGHT_DECAYS
        ]
    hidden = model.hidden.out_features // model.n_heads
    return [
        (
            {"mlp_epochs": int(ep), "weight_decay": MLP_WEIGHT_DECAY, **({"adversary": adversary} if adversary else {})},
            partial(BaggedMLP, n_classes, hidden, model.n_heads, int(ep), seed=seed, adversary=adversary),
        )
        for ep in MLP_EPOCHS
    ]


def fit_clip_stats(
    model: ClipStats,
    rows: Rows,
    windows: TrainWindows,
    n_classes: int,
    validate: Callable[[ClipStats], tuple[float, dict[str, Any]]],
    console: Console,
    seed: int = 0,
    adversary: float = 0.0,
) -> tuple[list[dict[str, Any]], float, int]:
    """Per candidate (``candidates``): cross-validate on the training speakers (``windows.speakers``), fit on
    every row and score the validation speakers (``validate(model) -> (figure, record)``); leave the fit with
    the best cross-validated UA in ``model`` (the best validation figure when there is one training
    speaker). Returns (history, the kept fit's validation figure, kept index + 1)."""
    if not np.isfinite(rows.x).all():
        raise ValueError("the window statistics hold NaN or infinite values")
    folds = speaker_folds(windows.speakers, windows.corpora)
    use_cv = len(np.unique(folds)) > 1
    if use_cv:
        console.print(f"cross-validation: {len(np.unique(folds))} folds of {len(set(windows.speakers))} training speakers")
    history: list[dict[str, Any]] = []
    best: tuple[float, int, Fit, float] | None = None
    for k, (what, make) in enumerate(candidates(model, n_classes, seed, adversary)):
        cv = cross_validated_ua(rows, windows.labels, windows.corpora, folds, n_classes, make) if use_cv else None
        fit = make()
        fit.fit(rows.x, rows.y, rows.speaker)
        load_fit(model, fit)
        selected, record = validate(model)
        record = {
            "epoch": k + 1,
            **what,
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
            ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in what.items())
            + ": "
            + (f"cross-validated UA {cv:.3f}, " if cv is not None else "")
            + f"val UA {record['val_ua']:.3f} {record['val_ua_per_corpus']} {'*' if improved else ' '}",
            highlight=False,
        )
    assert best is not None
    load_fit(model, best[2])
    return history, best[3], best[1]
