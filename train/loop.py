"""Training, top to bottom: config, data, model, a linear loop with validation and early stopping, test report.

``train(TrainConfig(...))`` loads the corpora, holds speakers out (``train.splits.default_holdout``:
test speakers never seen, validation speakers pick the epoch), trains with class-weighted
cross-entropy and AdamW on augmented streamer-like windows (``train.dataset``), validates every
``eval_every`` epochs on the validation speakers' clips windowed exactly as the streamer windows
them, keeps ``best.pt`` (highest validation UA) and ``last.pt`` (+ ``last.state.pt`` for
``resume``), stops after ``patience`` validations without improvement, then exports ``best.pt`` to
``model/`` and scores that exported model (ONNX, the streamer's path) on the test speakers:
``report.json``, ``predictions.csv``, ``confusion.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from emostream.models.arch import PITCH_ARCHITECTURES, build_model, count_parameters, takes_pitch
from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import FoldClasses
from emostream.models.features import FeatureConfig, LogMel, mel_centres_hz
from emostream.models.modelfile import (
    ModelSpec,
    export_model,
    load_checkpoint,
    load_classifier,
    onnxruntime_available,
    save_checkpoint,
)
from emostream.models.modelformat import SPEECH_META_KEY
from emostream.train.augment import Augmenter
from emostream.train.config import ROBUST_FEATURE_SETTINGS, ROBUST_MODEL_SETTINGS, TrainConfig, licence_note
from emostream.train.corpora import load_corpora
from emostream.train.corpora_tasks import is_speech_corpus
from emostream.train.corpus_base import Clip
from emostream.train.dataset import (
    DEFAULT_CACHE_DIR,
    EVAL_HOP_S,
    TrainWindows,
    clip_probabilities,
    load_audio,
    progress_bar,
)
from emostream.train.evaluate import evaluate_classifier, map_to_model
from emostream.train.labels import LabelSet, fold_plan, resolve_label_set
from emostream.train.metrics import compute_metrics
from emostream.train.optim import EmaWeights, schedule
from emostream.train.report import print_summary
from emostream.train.splits import Split, default_holdout, holdout


def split_seed(cfg: TrainConfig) -> int:
    """The seed of the speaker split: ``split_seed`` when given, else ``seed``."""
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


def training_split(clips: list[Clip], cfg: TrainConfig) -> Split:
    """The named test and validation groups when ``cfg`` gives them, else ``default_holdout``."""
    if cfg.test_groups:
        return holdout(clips, set(cfg.test_groups), set(cfg.val_groups))
    return default_holdout(clips, split_seed(cfg))


def train(cfg: TrainConfig, console: Console | None = None) -> dict[str, Any]:
    """Run one training; returns the test report (also written to ``out_dir/report.json``)."""
    console = console or Console()
    started = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else DEFAULT_CACHE_DIR

    # ---------------------------------------------------------------- data: clips, labels, speaker split
    all_clips, load_reports = load_corpora(Path(cfg.data_dir), list(cfg.datasets))
    for load_report in load_reports.values():
        console.print(load_report.summary(), highlight=False)
    label_set = resolve_label_set(cfg.labels, cfg.label_map, [c.label for c in all_clips])
    labels = label_set.labels
    mapped = map_to_model(all_clips, labels, label_set.mapping)
    clips, targets = mapped.clips, mapped.targets
    if cfg.max_clips_per_dataset:
        rng0 = np.random.default_rng(cfg.seed)
        keep = []
        for corpus in dict.fromkeys(c.corpus for c in clips):
            idx = [i for i, c in enumerate(clips) if c.corpus == corpus]
            keep += sorted(
                rng0.choice(idx, size=min(len(idx), cfg.max_clips_per_dataset), replace=False).tolist()
            )
        keep.sort()
        clips, targets = [clips[i] for i in keep], targets[keep]
    split = training_split(clips, cfg)
    # the head's classes: the label set's, plus each merged label trained apart (--fold-merged)
    head_labels, fold = fold_plan(label_set, [c.label for c in clips]) if cfg.fold_merged else (labels, ())
    if not fold:  # the head is the label set, with its mapping (calm -> neutral)
        head_set = label_set
    else:
        head_set = (LabelSet(head_labels, open_vocabulary=True) if label_set.open_vocabulary
                    else resolve_label_set(",".join(head_labels)))
    head_targets = np.array([head_set.class_index(c.label) for c in clips], dtype=np.int64)
    if not 0 <= cfg.mixup_prob <= 1 or cfg.mixup < 0:
        raise ValueError(f"mixup must be >= 0 and mixup_prob in [0, 1], got {cfg.mixup}, {cfg.mixup_prob}")
    speakers = {part: sorted({clips[i].speaker for i in getattr(split, part)}) for part in ("val", "test")}
    console.print(
        f"labels: {', '.join(labels)} (map {label_set.mapping or 'none'}); skipped {mapped.skipped or 'none'}"
        + (f"; trained apart and folded at inference: {', '.join(head_labels[len(labels):])}" if fold else "")
    )
    console.print(
        f"clips: train {len(split.train)}, val {len(split.val)} ({', '.join(speakers['val'])}), "
        f"test {len(split.test)} ({', '.join(speakers['test'])})",
        highlight=False,
    )
    if not split.train or not split.val:
        raise ValueError("the split left no training or no validation clips; add speakers or corpora")

    if cfg.select not in ("mean_corpus_ua", "pooled_ua"):
        raise ValueError(f"select must be mean_corpus_ua or pooled_ua, got {cfg.select!r}")
    settings = {**ROBUST_MODEL_SETTINGS.get(cfg.arch, {}), **cfg.model_settings}
    statistics_fit = cfg.arch == "clip_stats"  # fitted on its window statistics (train.statsfit), not through the log-mel
    if cfg.adversary < 0 or (cfg.adversary > 0 and not statistics_fit):
        raise ValueError(f"--adversary must be 0 or positive, and trains clip_stats's heads only (arch {cfg.arch!r})")
    level_invariant = settings.get("input_norm", "batch") != "batch" or statistics_fit
    fc = FeatureConfig(**{**(ROBUST_FEATURE_SETTINGS if level_invariant else {}), **cfg.feature_settings})
    if cfg.arch in PITCH_ARCHITECTURES:  # either setting alone switches pitch on for features and model
        if fc.pitch:
            settings.setdefault("pitch", True)
        elif takes_pitch(cfg.arch, settings) and "pitch" not in cfg.feature_settings:
            fc = dataclasses.replace(fc, pitch=True)
        elif "pitch" in cfg.feature_settings:
            settings.setdefault("pitch", False)
    if cfg.epochs < (0 if statistics_fit else 1):
        raise ValueError(f"epochs must be at least {0 if statistics_fit else 1}, got {cfg.epochs}")
    if statistics_fit and (fold or cfg.mixup > 0):
        raise ValueError("clip_stats is fitted on its window statistics: --fold-merged and --mixup do not apply")
    model_config = ModelConfig(cfg.arch, len(labels), fc.n_mels, settings, fold)
    ModelSpec(fc, model_config, labels)  # refuses features and model that disagree before any audio is loaded
    audio = load_audio(clips, fc.sample_rate_hz, cache_dir, console)
    augmenter = Augmenter(cfg.augment, fc.sample_rate_hz, seed=cfg.seed)
    centres = mel_centres_hz(fc)
    train_windows = TrainWindows(
        [audio[i] for i in split.train],
        head_targets[split.train],
        [clips[i].speaker for i in split.train],
        fc,
        cfg.windows,
        augmenter,
        corpora=[clips[i].corpus for i in split.train],
        balance=cfg.balance,
    )
    val_audio, val_targets = [audio[i] for i in split.val], targets[split.val]
    val_corpora = [clips[i].corpus for i in split.val]

    # ---------------------------------------------------------------- model, loss, optimiser
    model = build_model(model_config)
    head = model.inner if isinstance(model, FoldClasses) else model  # trained on every head class
    ema = EmaWeights(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    logmel = LogMel(fc)
    counts = train_windows.class_shares(len(head_labels))
    weights = torch.tensor(counts.sum() / (len(head_labels) * np.maximum(counts, 1e-9)), dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_windows) / cfg.batch_size)
    scheduler = schedule(optimizer, cfg, steps_per_epoch)
    console.print(
        f"model: {cfg.arch} {model_config.settings or '(defaults)'}, {count_parameters(model):,} parameters; "
        f"class weights {np.round(weights.numpy(), 2).tolist()}",
        highlight=False,
    )

    def spec(meta: dict[str, Any]) -> ModelSpec:
        # JSON-clean (tuples -> lists), so the checkpoint's meta equals the one embedded in the exports
        return ModelSpec(fc, model_config, labels, json.loads(json.dumps(meta, default=str)))

    base_meta: dict[str, Any] = {
        "name": cfg.name or out.name,
        "command": cfg.command,
        "datasets": list(load_reports),
        "label_map": dict(label_set.mapping),
        # whether the streamer gates this model on a speech detector (models.modelformat.SPEECH_META_KEY)
        SPEECH_META_KEY: all(is_speech_corpus(name) for name in load_reports),
        **({"head_labels": list(head_labels)} if fold else {}),
        "split": {
            "method": "train.splits.holdout (given groups)" if cfg.test_groups else "train.splits.default_holdout",
            "seed": split_seed(cfg),
            **speakers,
            "train": sorted({clips[i].speaker for i in split.train}),
        },
        "n_clips": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "seed": cfg.seed,
        "licence": licence_note(list(load_reports)),
        "train_config": cfg.to_dict(),
        "windowing": {"train": "see train.dataset", "eval_hop_s": EVAL_HOP_S},
    }

    # ---------------------------------------------------------------- resume
    start_epoch, best_ua, best_epoch, bad_evals, history, elapsed_before = 0, -1.0, -1, 0, [], 0.0
    finished = False
    state_path = out / "last.state.pt"
    if cfg.resume and (out / "last.pt").is_file() and state_path.is_file():
        model.load_state_dict(load_checkpoint(out / "last.pt").state_dict)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_ua, best_epoch = (
            int(state["epoch"]),
            float(state["best_ua"]),
            int(state["best_epoch"]),
        )
        bad_evals, history = int(state["bad_evals"]), list(state["history"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        elapsed_before = float(state["elapsed_s"])
        finished = bool(state.get("finished", False))
        augmenter.stats.update(dict(state.get("augment_stats", {})))
        train_windows.n_joined, train_windows.n_shifted = state.get("window_stats", [0, 0])
        console.print(
            f"resumed from {out / 'last.pt'} after epoch {start_epoch} (best val UA {best_ua:.3f} at {best_epoch})"
        )
    elif cfg.resume:
        console.print(f"[yellow]no {out / 'last.pt'} to resume from; starting afresh[/yellow]")

    # ---------------------------------------------------------------- the loop
    def scored_model() -> nn.Module:
        return ema.model if ema is not None else model

    def validate(scored: nn.Module) -> tuple[float, dict[str, Any]]:
        """The validation speakers' clips, windowed as the streamer windows them: (selected figure, record)."""
        scored.eval()

        def predict_val(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return torch.softmax(scored(x), dim=-1).numpy()

        probs = clip_probabilities(val_audio, predict_val, fc)
        m = compute_metrics(val_targets, probs.argmax(1), labels)
        per_corpus = {}
        for corpus in dict.fromkeys(val_corpora):
            idx = [i for i, c in enumerate(val_corpora) if c == corpus]
            # each corpus scored over its own classes (URDU: 4 of 7), as evaluation's "restricted" UA
            own = np.unique(val_targets[idx])
            pred = own[probs[idx][:, own].argmax(1)]
            per_corpus[corpus] = round(compute_metrics(val_targets[idx], pred, labels).ua, 4)
        selected = float(np.mean(list(per_corpus.values()))) if cfg.select == "mean_corpus_ua" else m.ua
        return selected, {
            "val_selected": selected,
            "val_ua": m.ua,
            "val_wa": m.wa,
            "val_macro_f1": m.macro_f1,
            "val_ua_per_corpus": per_corpus,
        }

    t0 = time.time()
    epoch = start_epoch
    if statistics_fit:
        from emostream.models.arch.clip_stats import ClipStats
        from emostream.train.statsfit import fit_clip_stats, training_rows

        assert isinstance(model, ClipStats)
        rows = training_rows(model, logmel, train_windows, cfg.epochs, cfg.seed, console)
        history, best_ua, best_epoch = fit_clip_stats(
            model, rows, train_windows, len(labels), validate, console, seed=cfg.seed, adversary=cfg.adversary
        )
        kept = history[best_epoch - 1]
        meta = {**base_meta, "epoch": best_epoch, "metrics": kept, "time": datetime.now(UTC).isoformat(timespec="seconds")}
        save_checkpoint(out / "best.pt", model, spec(meta))
        finished = True
    with progress_bar(console, transient=True) as progress:
        for epoch in range(start_epoch, cfg.epochs if not finished else start_epoch):
            # every epoch's randomness derives from (seed, epoch), so resume reproduces a straight run
            rng = np.random.default_rng([cfg.seed, epoch])
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            torch.manual_seed(cfg.seed * 100003 + epoch)
            model.train()
            epoch_start = time.time()
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch)
            total_loss, correct, seen, mixed = 0.0, 0, 0, 0
            for waves, y in train_windows.batches(cfg.batch_size, rng):
                with torch.no_grad():
                    x = augmenter.spec(augmenter.warp(logmel(torch.from_numpy(waves)), gen, centres), gen, fc.n_mels)
                yt = torch.from_numpy(y)
                if cfg.mixup > 0 and rng.random() < cfg.mixup_prob:
                    lam, mixed = float(rng.beta(cfg.mixup, cfg.mixup)), mixed + 1
                    perm = torch.from_numpy(rng.permutation(len(y)))
                    logits = head(lam * x + (1 - lam) * x[perm])
                    loss = lam * criterion(logits, yt) + (1 - lam) * criterion(logits, yt[perm])
                else:
                    logits = head(x)
                    loss = criterion(logits, yt)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                total_loss += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == yt).sum())
                seen += len(y)
                progress.advance(task)
            progress.remove_task(task)
            train_s = time.time() - epoch_start
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": total_loss / seen,
                "train_acc": correct / seen,
                "lr": scheduler.get_last_lr()[0],
                "train_s": round(train_s, 1),
                **({"mixed_batches": mixed} if cfg.mixup > 0 else {}),
            }

            # validation: the validation speakers' clips, windowed as the streamer windows them
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                selected, scores = validate(scored_model())
                record.update(scores)
                improved = selected > best_ua
                if improved:
                    best_ua, best_epoch, bad_evals = selected, epoch + 1, 0
                    save_checkpoint(
                        out / "best.pt",
                        scored_model(),
                        spec(
                            {
                                **base_meta,
                                "epoch": epoch + 1,
                                "metrics": record,
                                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                            }
                        ),
                    )
                else:
                    bad_evals += 1
                console.print(
                    f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {record['train_loss']:.3f}  train acc {record['train_acc']:.3f}  "
                    f"val UA {record['val_ua']:.3f} WA {record['val_wa']:.3f} {record['val_ua_per_corpus']} "
                    f"({cfg.select} {selected:.3f})  "
                    f"{'*' if improved else ' '}  "
                    f"{train_s:.0f}+{time.time() - epoch_start - train_s:.0f} s",
                    highlight=False,
                )
            history.append(record)

            elapsed = elapsed_before + time.time() - t0
            finished = epoch + 1 == cfg.epochs or bool(cfg.patience and bad_evals >= cfg.patience)
            save_checkpoint(
                out / "last.pt",
                model,
                spec(
                    {
                        **base_meta,
                        "epoch": epoch + 1,
                        "metrics": record,
                        "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                ),
            )
            torch.save(
                {
                    "epoch": epoch + 1,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_ua": best_ua,
                    "best_epoch": best_epoch,
                    "bad_evals": bad_evals,
                    "history": history,
                    "elapsed_s": elapsed,
                    "augment_stats": dict(augmenter.stats),
                    "finished": finished,
                    "window_stats": [train_windows.n_joined, train_windows.n_shifted],
                    **({"ema": ema.state_dict()} if ema is not None else {}),
                },
                state_path,
            )
            if cfg.patience and bad_evals >= cfg.patience:
                console.print(f"early stop: no better validation UA for {bad_evals} validations")
                break
    train_seconds = elapsed_before + time.time() - t0

    # ---------------------------------------------------------------- export best.pt, score it on the test speakers
    best = load_checkpoint(out / "best.pt")
    final_meta = {
        **best.spec.meta,
        "train_seconds": round(train_seconds, 1),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "augment_stats": dict(augmenter.stats),
        "window_stats": {"joined": train_windows.n_joined, "shifted": train_windows.n_shifted},
    }
    best_path = save_checkpoint(out / "best.pt", best.build(), spec(final_meta))
    model_dir = export_model(best_path, out / "model")
    classifier = load_classifier(
        model_dir, backend="onnx" if onnxruntime_available() else "auto", threads=cfg.threads
    )
    test_clips = [clips[i] for i in split.test]
    report = evaluate_classifier(
        classifier,
        test_clips,
        label_set.mapping,
        None,
        out / "predictions.csv",
        out / "confusion.png",
        cache_dir,
        console,
        extra={
            "command": cfg.command,
            "speakers": "the model's recorded test speakers",
            "train": {
                "seconds": round(train_seconds, 1),
                "wall_seconds": round(time.time() - started, 1),
                "epochs_run": len(history),
                "best_epoch": best_epoch,
                "best_val_ua": best_ua,
                "augment_stats": dict(augmenter.stats),
                "window_stats": final_meta["window_stats"],
                "history": history,
                "split": base_meta["split"],
                "n_clips": base_meta["n_clips"],
                "machine": f"{platform.processor() or platform.machine()}, torch threads {cfg.threads}",
                "config": cfg.to_dict(),
            },
        },
    )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report, console)
    console.print(
        f"trained {len(history)} epochs in {train_seconds / 60:.1f} min; best epoch {best_epoch} "
        f"(val UA {best_ua:.3f}); model -> {model_dir}"
    )
    return report
