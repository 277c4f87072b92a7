"""Evaluation protocols beyond one held-out-speaker split: leave-one-corpus-out and the statistics baseline.

``emostream crosscorpus``: for every corpus H of the given ones, train on the others and score every
clip of H (speakers, recordings and often the language never seen), on the four classes all corpora
share (neutral, happy, sad, angry; calm counted as neutral). Each fold scores the statistics
baseline (``train.baseline``) and, with ``--deep``, a streaming model trained by ``train.loop.train``
with the same recipe as the shipped model (its own validation speakers of the training corpora pick
the epoch; H is never seen in training or selection). The baseline trains on the same training
speakers as the deep model (``default_holdout`` of the training corpora: its train part). With
``--perturb`` every model is scored again on H under each condition (telephone line, noise, room,
gain): robustness on corpora never heard.

``emostream baseline``: the statistics baseline on the held-out-speaker split the shipped model uses
(``default_holdout``, seed 0): trained on the training speakers, scored per corpus on the test speakers,
so it sits in the same table as the deep model.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from emostream.models.features import FeatureConfig
from emostream.train.augment import AugmentConfig
from emostream.train.baseline import ClipFeatures, LogisticBaseline, group_columns, speaker_normalise
from emostream.train.corpora import Clip, load_corpora
from emostream.train.dataset import DEFAULT_CACHE_DIR, load_audio, progress_bar, to_float
from emostream.train.evaluate import (
    changed_predictions,
    condition_scores,
    evaluate_classifier,
    map_to_model,
    score,
)
from emostream.train.labels import resolve_label_set
from emostream.train.perturb import Perturbation
from emostream.train.report import print_changed, print_robustness, print_speakers, table_lines
from emostream.train.splits import default_holdout

BASELINE_FEATURES_VERSION = 1
COLUMN_TITLES = {"baseline": "statistics baseline", "deep": "streaming model", "ensemble": "ensemble"}
"""The leave-one-corpus-out report's model columns, in order, and their titles in its tables."""
SHARED_CLASSES = "4class"
"""neutral, happy, sad, angry (calm -> neutral): the classes every corpus in ../shared/data has."""


def clip_features(
    clips: Sequence[Clip], fc: FeatureConfig, cache_dir: Path, console: Console | None
) -> np.ndarray:
    """``ClipFeatures`` of every clip, with a progress bar; cached under ``cache_dir`` by clip list and settings."""
    key = hashlib.sha1(f"{BASELINE_FEATURES_VERSION}:{json.dumps(fc.to_dict(), sort_keys=True)}".encode())
    for clip in clips:
        st = Path(clip.path).stat()
        key.update(f"\n{Path(clip.path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    cached = Path(cache_dir) / f"baseline-features-{key.hexdigest()[:16]}.npy"
    if cached.is_file():
        return np.load(cached)
    audio = load_audio(clips, fc.sample_rate_hz, cache_dir, console)
    feats = ClipFeatures(fc)
    rows = []
    with progress_bar(console) as progress:
        task = progress.add_task(f"statistics of {len(clips)} clips", total=len(clips))
        for a in audio:
            rows.append(feats.one(to_float(a)))
            progress.advance(task)
    x = np.stack(rows)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".tmp.npy")
    np.save(tmp, x)
    tmp.replace(cached)
    return x


@dataclass(frozen=True)
class BaselineVariant:
    """What the statistics baseline is given: every feature group but ``without``, and with
    ``speaker_norm`` each clip's statistics relative to its speaker's mean (``train.baseline``)."""

    without: tuple[str, ...] = ()
    speaker_norm: bool = False

    def apply(self, x: np.ndarray, clips: Sequence[Clip], n_mels: int) -> np.ndarray:
        x = x[:, group_columns(n_mels, self.without)]
        return speaker_normalise(x, [f"{c.corpus}:{c.speaker}" for c in clips]) if self.speaker_norm else x

    def describe(self) -> str:
        parts = [f"without {', '.join(self.without)}"] if self.without else []
        return "; ".join([*parts, *(["speaker-normalised"] if self.speaker_norm else [])]) or "all features"


def fit_baseline(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_clips: Sequence[Clip],
    test_x: np.ndarray,
    test_y: np.ndarray,
    labels: Sequence[str],
) -> tuple[LogisticBaseline, np.ndarray, dict[str, Any]]:
    """Fit the baseline on the training rows and ``train.evaluate.score`` it on the test rows; the fitted
    baseline and its test probabilities are returned too, to score it again under perturbations."""
    model = LogisticBaseline(len(labels)).fit(train_x, train_y)
    probs = model.predict_proba(test_x)
    return model, probs, score(test_clips, test_y, probs, labels)


def baseline_robustness(
    model: LogisticBaseline,
    clips: Sequence[Clip],
    targets: np.ndarray,
    labels: Sequence[str],
    perturbations: Sequence[Perturbation],
    fc: FeatureConfig,
    variant: BaselineVariant,
    cache_dir: Path,
    console: Console | None,
    clean_probs: np.ndarray,
) -> dict[str, Any]:
    """The fitted baseline's UA per condition, overall and per corpus, on the same clips: each clip
    changed as ``emostream evaluate --perturb`` changes it (``train.perturb``), its statistics computed
    again; and how many clips' predicted class each condition changed from the clean audio's
    (``clean_probs``, which a ``clean`` condition reuses). The same shape as ``train.evaluate.robustness``."""
    audio = load_audio(clips, fc.sample_rate_hz, cache_dir, console)
    feats = ClipFeatures(fc)
    clean_preds = clean_probs.argmax(axis=1)
    out: dict[str, Any] = {}
    for pert in perturbations:
        if pert.kind == "clean":
            probs = clean_probs
        else:
            rows = []
            with progress_bar(console) as progress:
                task = progress.add_task(f"{pert.name}: statistics of {len(clips)} clips", total=len(clips))
                for i, a in enumerate(audio):
                    rows.append(feats.one(pert.apply(to_float(a), fc.sample_rate_hz, seed=i)))
                    progress.advance(task)
            probs = model.predict_proba(variant.apply(np.stack(rows), clips, fc.n_mels))
        changed = changed_predictions(clips, probs.argmax(axis=1), clean_preds)
        out[pert.name] = condition_scores(score(clips, targets, probs, labels), changed)
    return out


def run_baseline(
    data: Path,
    datasets: Sequence[str],
    labels_name: str,
    out: Path,
    cache_dir: Path,
    console: Console,
    seed: int = 0,
    variant: BaselineVariant = BaselineVariant(),
    perturbations: Sequence[Perturbation] = (),
) -> dict[str, Any]:
    """The baseline on ``default_holdout`` (train speakers -> test speakers); writes ``out``. With
    ``perturbations``, the report's ``robustness`` holds UA per condition (``baseline_robustness``)."""
    label_set = resolve_label_set(labels_name)
    clips_all, _ = load_corpora(data, list(datasets))
    mapped = map_to_model(clips_all, label_set.labels, label_set.mapping)
    clips, targets = mapped.clips, mapped.targets
    split = default_holdout(clips, seed)
    fc = FeatureConfig()
    started = time.time()
    x = variant.apply(clip_features(clips, fc, cache_dir, console), clips, fc.n_mels)
    test_clips = [clips[i] for i in split.test]
    model = LogisticBaseline(len(label_set.labels)).fit(x[split.train], targets[split.train])
    probs = model.predict_proba(x[split.test])
    report = score(test_clips, targets[split.test], probs, label_set.labels)
    if perturbations:
        report["robustness"] = baseline_robustness(
            model, test_clips, targets[split.test], label_set.labels, perturbations, fc, variant, cache_dir,
            console, clean_probs=probs,
        )
    report.update(
        {
            "protocol": f"held-out speakers (train.splits.default_holdout, seed {seed})",
            "model": "statistics baseline (train.baseline): log-mel + pitch statistics, logistic regression",
            "features": variant.describe(),
            "n_features": int(x.shape[1]),
            "labels": list(label_set.labels),
            "n_clips": {"train": len(split.train), "test": len(split.test)},
            "seconds": round(time.time() - started, 1),
            "machine": platform.processor() or platform.machine(),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"statistics baseline ({variant.describe()}), held-out test speakers ({labels_name})")
    for col in ("data set", "n", "UA %", "WA %", "macro-F1 %"):
        table.add_column(col, justify="right")
    for name, d in [*report["datasets"].items(), ("overall", report["overall"])]:
        table.add_row(name, str(d["n"]), f"{100 * d['ua']:.1f}", f"{100 * d['wa']:.1f}", f"{100 * d['macro_f1']:.1f}")
    console.print(table)
    print_speakers(report, console)
    if perturbations:
        title = "statistics baseline: UA % under each condition (change from clean)"
        print_robustness(report["robustness"], console, clean={"ua": report["overall"]["ua"], "datasets": report["datasets"]}, title=title)
        print_changed(report, console)
    return report


def run_crosscorpus(
    data: Path,
    datasets: Sequence[str],
    out: Path,
    cache_dir: Path,
    console: Console,
    deep: bool = False,
    epochs: int = 12,
    threads: int = 2,
    seed: int = 0,
    max_clips: int = 0,
    held_out: Sequence[str] | None = None,
    variant: BaselineVariant = BaselineVariant(),
    model_settings: dict[str, Any] | None = None,
    feature_settings: dict[str, Any] | None = None,
    arch: str = "bandsplit_bilstm",
    combine: Sequence[Path] = (),
    augment: AugmentConfig | None = None,
    perturbations: Sequence[Perturbation] = (),
    split_seed: int | None = None,
    adversary: float = 0.0,
    combine_bands: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Leave-one-corpus-out on ``datasets`` (module docstring); writes ``out/crosscorpus.json`` and ``.md``.

    ``held_out`` (default: every corpus of ``datasets``) chooses the folds that run: the corpora held out
    in turn, each scored after training on all the other corpora of ``datasets``. ``model_settings`` and
    ``feature_settings`` go to every deep fold's training as ``emostream train`` takes them (the recipe's
    settings unless they say otherwise), ``augment`` their augmentation (default: ``AugmentConfig()``), and
    ``arch`` is the deep folds' architecture (``clip_stats``: the statistics baseline as a level-invariant
    streaming model); the statistics baseline does not use them.

    ``combine``: earlier runs of this command (their ``--out`` folders); each fold's models in them
    (``without_<corpus>/model``), and this run's deep fold model with ``deep``, are combined into one
    ensemble (``models.ensemble``; the mean of their probabilities) that is scored on the held-out corpus
    as the ``ensemble`` column. Every fold needs at least two models. ``combine_bands`` maps some of those
    runs (as given) to ``wide`` or ``narrow``: their fold models score only windows of that band in the
    fold's ensemble (``models.ensemble.combine``'s ``bands``).

    ``seed`` seeds the deep folds' training and, unless ``split_seed`` is given, the speaker split of the
    training corpora (which speakers train, which validate); ``split_seed`` keeps the split while the
    training seed changes, so that a second draw of a recipe can be combined with the other runs' folds.
    ``adversary`` is the deep folds' speaker adversary (``TrainConfig.adversary``; ``clip_stats`` heads).

    ``perturbations`` (``emostream crosscorpus --perturb``): every column is scored again on the held-out
    corpus under each condition, the clips changed as ``emostream evaluate --perturb`` changes them (the
    baseline's statistics computed again on the changed audio); each column's ``robustness`` holds UA per
    condition, and ``mean_ua_perturbed`` their means over the folds. Robustness on corpora never heard, on
    every clip of each (thousands, against a few hundred validation clips).
    """
    from emostream.models.arch import ARCHITECTURES
    from emostream.models.ensemble import write_ensemble
    from emostream.train.loop import TrainConfig, train

    if len(datasets) < 2:
        raise ValueError("leave-one-corpus-out needs at least two corpora")
    augment = augment or AugmentConfig()
    perturbations = [p for p in perturbations if p.kind != "clean"]  # clean is every column's own UA
    if arch not in ARCHITECTURES or arch == "ensemble":
        raise ValueError(f"unknown architecture {arch!r} for the deep folds; known: {', '.join(ARCHITECTURES[:-1])}")
    if adversary < 0 or (adversary > 0 and not (deep and arch == "clip_stats")):
        raise ValueError("--adversary must be 0 or positive, and trains --deep folds of --arch clip_stats only")
    folds_to_run = list(datasets) if held_out is None else list(dict.fromkeys(held_out))
    unknown = [d for d in folds_to_run if d not in datasets]
    if unknown or not folds_to_run:
        raise ValueError(
            f"--hold-out must name corpora of --datasets ({', '.join(datasets)}), got {', '.join(unknown) or 'none'}"
        )
    fold_models: dict[str, list[tuple[Path, str | None]]] = {}  # per fold: each earlier run's model and its band
    for held in folds_to_run:
        found = [(Path(d) / f"without_{held}" / "model", (combine_bands or {}).get(str(d))) for d in combine]
        fold_models[held] = [(m, band) for m, band in found if m.is_dir()]
        if combine and len(fold_models[held]) + int(deep) < 2:
            raise ValueError(
                f"--combine: the {held} fold has {len(fold_models[held])} model(s) in "
                f"{', '.join(str(d) for d in combine)} (each run folder holds without_<corpus>/model per fold)"
                + (" besides this run's deep one" if deep else "")
                + "; an ensemble needs at least two"
            )
    label_set = resolve_label_set(SHARED_CLASSES)
    labels = label_set.labels
    clips_all, _ = load_corpora(data, list(datasets))
    mapped = map_to_model(clips_all, labels, label_set.mapping)
    clips, targets = mapped.clips, mapped.targets
    fc = FeatureConfig()
    x = variant.apply(clip_features(clips, fc, cache_dir, console), clips, fc.n_mels)
    out.mkdir(parents=True, exist_ok=True)
    folds: dict[str, Any] = {}
    started = time.time()
    for held in folds_to_run:
        test_idx = [i for i, c in enumerate(clips) if c.corpus == held]
        train_pool = [i for i, c in enumerate(clips) if c.corpus != held]
        pool_clips = [clips[i] for i in train_pool]
        split = default_holdout(pool_clips, seed if split_seed is None else split_seed)
        train_idx = [train_pool[i] for i in split.train]
        test_clips = [clips[i] for i in test_idx]
        base_model, base_probs, base = fit_baseline(
            x[train_idx], targets[train_idx], test_clips, x[test_idx], targets[test_idx], labels
        )
        fold: dict[str, Any] = {
            "train_corpora": [d for d in datasets if d != held],
            "n_test_clips": len(test_idx),
            "n_train_clips": len(train_idx),
            "baseline": {**_headline(base["overall"]), "per_speaker": _per_speaker(base)},
        }
        if perturbations:
            rob = baseline_robustness(
                base_model, test_clips, targets[test_idx], labels, perturbations, fc, variant, cache_dir, console,
                clean_probs=base_probs,
            )
            fold["baseline"]["robustness"] = {cond: r["ua"] for cond, r in rob.items()}
            fold["baseline"]["changed"] = {cond: r["changed"] for cond, r in rob.items()}
        console.print(f"[bold]{held}[/bold] held out: baseline UA {100 * base['overall']['ua']:.1f} %")
        if deep:
            run_dir = out / f"without_{held}"
            cfg = TrainConfig(
                data_dir=str(data),
                datasets=tuple(d for d in datasets if d != held),
                labels=SHARED_CLASSES,
                arch=arch,
                epochs=epochs,
                patience=0,
                threads=threads,
                seed=seed,
                split_seed=split_seed,
                out_dir=str(run_dir),
                cache_dir=str(cache_dir),
                max_clips_per_dataset=max_clips,
                model_settings=dict(model_settings or {}),
                feature_settings=dict(feature_settings or {}),
                augment=augment,
                adversary=adversary,
                name=f"loco-without-{held}",
                command=f"emostream crosscorpus (fold {held})",
            )
            train(cfg, console)
            scored = _score_fold_model(
                run_dir / "model", test_clips, label_set.mapping, cache_dir, threads, console, perturbations
            )
            _print_fold(console, held, "deep", scored, base)
            fold["deep"] = {**scored, "epochs": epochs, "model": str(run_dir / "model")}
        if combine:
            tagged = [*([(out / f"without_{held}" / "model", None)] if deep else []), *fold_models[held]]
            members: list[Path | str] = [m for m, _ in tagged]
            tags = [band for _, band in tagged]
            ens_dir = write_ensemble(
                members,
                out / f"without_{held}" / "ensemble",
                name=f"loco-ensemble-without-{held}",
                model_bands=tags,
            )
            scored = _score_fold_model(
                ens_dir, test_clips, label_set.mapping, cache_dir, threads, console, perturbations
            )
            _print_fold(console, held, f"ensemble of {len(members)}", scored, base)
            fold["ensemble"] = {
                **scored,
                "members": [str(m) for m in members],
                **({"bands": tags} if any(tags) else {}),
                "model": str(ens_dir),
            }
        folds[held] = fold
    report: dict[str, Any] = {
        "protocol": "leave-one-corpus-out, 4 classes (neutral, happy, sad, angry; calm -> neutral)",
        "datasets": list(datasets),
        "baseline_features": variant.describe(),
        **(
            {
                "deep_settings": {
                    "arch": arch,
                    "model": dict(model_settings or {}),
                    "features": dict(feature_settings or {}),
                    "augment": augment.to_dict(),
                    **({"adversary": adversary} if adversary else {}),
                }
            }
            if deep
            else {}
        ),
        "seeds": {"training": seed, "split": seed if split_seed is None else split_seed},
        "folds": folds,
        "mean_ua": {
            "baseline": float(np.mean([f["baseline"]["ua"] for f in folds.values()])),
            **({"deep": float(np.mean([f["deep"]["ua"] for f in folds.values()]))} if deep else {}),
            **({"ensemble": float(np.mean([f["ensemble"]["ua"] for f in folds.values()]))} if combine else {}),
        },
        **(
            {
                "perturbations": [p.name for p in perturbations],
                "mean_ua_perturbed": {
                    column: {
                        p.name: float(np.mean([f[column]["robustness"][p.name] for f in folds.values()]))
                        for p in perturbations
                    }
                    for column in _columns(deep, bool(combine))
                },
            }
            if perturbations
            else {}
        ),
        "seconds": round(time.time() - started, 1),
        "machine": platform.processor() or platform.machine(),
    }
    (out / "crosscorpus.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "crosscorpus.md").write_text(markdown_table(report) + "\n")
    table = Table(title="leave-one-corpus-out, 4 classes: UA % on the held-out corpus")
    columns = _columns(deep, bool(combine))
    for col in ("held out", "test clips", *columns):
        table.add_column(col, justify="right")
    for held, f in folds.items():
        table.add_row(held, str(f["n_test_clips"]), *[f"{100 * f[c]['ua']:.1f}" for c in columns])
    table.add_row(_mean_label(folds, datasets), "", *[f"{100 * v:.1f}" for v in report["mean_ua"].values()])
    console.print(table)
    if perturbations:
        table = Table(title="leave-one-corpus-out: UA % under each condition (change from clean)")
        for col in ("held out", "model", "clean", *(p.name for p in perturbations)):
            table.add_column(col, justify="right")
        for row in _perturbed_rows(report):
            table.add_row(*row)
        console.print(table)
    return report


def _columns(deep: bool, combine: bool) -> list[str]:
    """The report's model columns: the baseline always, then the deep fold model and the ensemble when run."""
    return ["baseline", *(["deep"] if deep else []), *(["ensemble"] if combine else [])]


def _mean_label(folds: Sequence[str] | dict[str, Any], datasets: Sequence[str]) -> str:
    """'mean' over the full protocol; which folds it covers when only some ran (``--hold-out``)."""
    return "mean" if len(folds) == len(datasets) else f"mean ({', '.join(folds)} only)"


def _headline(overall: dict[str, Any]) -> dict[str, float]:
    """UA, WA and macro-F1 of a report's ``overall`` section."""
    return {k: overall[k] for k in ("ua", "wa", "macro_f1")}


def _score_fold_model(
    model_dir: Path,
    test_clips: Sequence[Clip],
    mapping: dict[str, str],
    cache_dir: Path,
    threads: int,
    console: Console,
    perturbations: Sequence[Perturbation] = (),
) -> dict[str, Any]:
    """A fold's model scored on the held-out corpus: the streamer's windows, ONNX Runtime where there is one;
    with ``perturbations``, its UA under each condition as ``robustness`` and the number of clips whose
    predicted class each condition changed as ``changed``."""
    from emostream.models.modelfile import load_classifier, onnxruntime_available

    classifier = load_classifier(model_dir, backend="onnx" if onnxruntime_available() else "auto", threads=threads)
    rep = evaluate_classifier(
        classifier, test_clips, mapping, cache_dir=cache_dir, console=console, perturbations=perturbations
    )
    scored: dict[str, Any] = {**_headline(rep["overall"]), "per_speaker": _per_speaker(rep)}
    if perturbations:
        scored["robustness"] = {cond: r["ua"] for cond, r in rep["robustness"].items()}
        scored["changed"] = {cond: r["changed"] for cond, r in rep["robustness"].items() if "changed" in r}
    return scored


def _per_speaker(report: dict[str, Any]) -> dict[str, float]:
    """UA per speaker of a ``score`` report's corpora, over each speaker's own classes."""
    return {spk: s["ua"] for d in report["datasets"].values() for spk, s in d.get("per_speaker", {}).items()}


def _print_fold(console: Console, held: str, what: str, scored: dict[str, Any], base: dict[str, Any]) -> None:
    console.print(
        f"[bold]{held}[/bold] held out: {what} UA {100 * scored['ua']:.1f} % (baseline {100 * base['overall']['ua']:.1f} %)"
    )


def markdown_table(report: dict[str, Any]) -> str:
    """The leave-one-corpus-out table as Markdown (and the table per condition, when it has one)."""
    titles = COLUMN_TITLES
    columns = [c for c in titles if c in report["mean_ua"]]
    lines = [
        "| held-out corpus | test clips |" + "".join(f" {titles[c]} UA % |" for c in columns),
        "|---|---:|" + "---:|" * len(columns),
    ]
    for held, f in report["folds"].items():
        lines.append(f"| {held} | {f['n_test_clips']} |" + "".join(f" {100 * f[c]['ua']:.1f} |" for c in columns))
    label = _mean_label(report["folds"], report["datasets"])
    lines.append(f"| {label} | |" + "".join(f" {100 * report['mean_ua'][c]:.1f} |" for c in columns))
    if report.get("perturbations"):
        conds = report["perturbations"]
        tables = [
            ("UA % under each condition on the held-out corpus (change from clean):", "clean", _perturbed_rows(report)),
            ("Clips of the held-out corpus whose predicted class each condition changed:", "test clips", _changed_rows(report)),
        ]
        for title, first, rows in tables:
            if rows:
                lines += table_lines(title, ["held-out corpus", "model"], [first, *conds], rows)
    speakers = _speaker_rows(report)
    if speakers:
        lines += table_lines(
            "UA % per speaker of the held-out corpus, over each speaker's own classes (the pooled UA above "
            "weighs speakers by their clips); in the last column on how many speakers the model is above, "
            "level with and below the statistics baseline:",
            ["held-out corpus", "model"],
            ["speakers", "lowest", "median", "highest", "above / level / below the baseline"],
            speakers,
        )
    return "\n".join(lines)


def _folds_label(report: dict[str, Any]) -> str:
    """The first cell of a table's row summed or pooled over the report's folds."""
    folds = report["folds"]
    return "all folds" if len(folds) == len(report["datasets"]) else f"folds {', '.join(folds)}"


def _speaker_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per fold and model column, the spread of UA over the held-out corpus's speakers and, for the models,
    on how many speakers each is above, level with and below the statistics baseline (a paired count,
    which one corpus's many clips cannot outvote); then the same over every fold's speakers.
    No rows for reports written before ``per_speaker`` existed."""
    columns = [c for c in COLUMN_TITLES if c in report["mean_ua"]]
    folds = report["folds"]
    if not folds or any("per_speaker" not in f[c] for f in folds.values() for c in columns):
        return []

    def row(held: str, column: str, scores: dict[str, float], base: dict[str, float]) -> list[str]:
        ua = np.array(list(scores.values()))
        diff = np.array([scores[s] - base[s] for s in scores])
        above = "-" if column == "baseline" else f"{(diff > 0).sum()} / {(diff == 0).sum()} / {(diff < 0).sum()}"
        cells = [f"{100 * v:.1f}" for v in (ua.min(), np.median(ua), ua.max())]
        return [held, COLUMN_TITLES[column], str(len(ua)), *cells, above]

    rows = [row(held, c, f[c]["per_speaker"], f["baseline"]["per_speaker"]) for held, f in folds.items() for c in columns]
    label = _folds_label(report)
    every = {c: {s: v for f in folds.values() for s, v in f[c]["per_speaker"].items()} for c in columns}
    rows += [row(label, c, every[c], every["baseline"]) for c in columns]
    return rows


def _changed_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per fold and model column that counts them (reports written before the counts lack them), the clips
    each condition changed the prediction of; then the sum over the folds."""
    conds = report["perturbations"]
    columns = [c for c in COLUMN_TITLES if c in report["mean_ua"]]
    folds = report["folds"]
    columns = [c for c in columns if all(set(conds) <= set(f[c].get("changed", {})) for f in folds.values())]
    rows = [
        [held, COLUMN_TITLES[c], str(f["n_test_clips"]), *(str(f[c]["changed"][k]) for k in conds)]
        for held, f in folds.items()
        for c in columns
    ]
    total = sum(f["n_test_clips"] for f in folds.values())
    label = _folds_label(report)
    rows += [
        [label, COLUMN_TITLES[c], str(total), *(str(sum(f[c]["changed"][k] for f in folds.values())) for k in conds)]
        for c in columns
    ]
    return rows


def _perturbed_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the robustness table: per fold and model column, clean UA then each condition's (change)."""
    titles = COLUMN_TITLES
    conds = report["perturbations"]
    columns = [c for c in titles if c in report["mean_ua"]]

    def cells(clean: float, by_cond: dict[str, float]) -> list[str]:
        return [f"{100 * clean:.1f}", *(f"{100 * by_cond[c]:.1f} ({100 * (by_cond[c] - clean):+.1f})" for c in conds)]

    rows = [[held, titles[c], *cells(f[c]["ua"], f[c]["robustness"])] for held, f in report["folds"].items() for c in columns]
    label = _mean_label(report["folds"], report["datasets"])
    rows += [[label, titles[c], *cells(report["mean_ua"][c], report["mean_ua_perturbed"][c])] for c in columns]
    return rows


def default_cache(path: Path | None) -> Path:
    return Path(path) if path else DEFAULT_CACHE_DIR
