"""Evaluate a model on labelled clips as the streamer would run it: per-corpus and overall report, predictions CSV.

A clip's prediction is the mean of its streamer windows' probabilities (``train.dataset``); the
exported model runs through ``models.modelfile.load_classifier`` (ONNX Runtime by default), the
streamer's own inference path. A corpus's labels are mapped to the model's (``calm -> neutral``,
from the model's training metadata plus ``--map``); clips whose label the model lacks are skipped
and counted. For a data set holding fewer classes than the model (URDU: 4 of 7), the report also
gives ``restricted`` scores, where the prediction is the most probable of the data set's own classes.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from models.features import FeatureConfig
from models.modelfile import Classifier, load_classifier
from train.corpora import Clip, corpus_format, detect_corpus, load_corpora, load_corpus
from train.dataset import EVAL_HOP_S, clip_probabilities, load_audio, progress_bar
from train.labels import normalise_label
from train.metrics import Metrics, compute_metrics, plot_confusion
from train.splits import default_holdout


@dataclass(frozen=True, slots=True)
class Targets:
    """Clips the model can be scored on, their class indices, and what was skipped (label -> count per corpus)."""

    clips: list[Clip]
    targets: np.ndarray
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


def map_to_model(clips: Sequence[Clip], labels: Sequence[str], mapping: dict[str, str]) -> Targets:
    """Keep the clips whose (mapped) label is one of the model's ``labels``; count the others per corpus."""
    kept: list[Clip] = []
    targets: list[int] = []
    skipped: dict[str, Counter[str]] = defaultdict(Counter)
    for clip in clips:
        name = normalise_label(clip.label) or clip.label
        name = mapping.get(name, name)
        if name in labels:
            kept.append(clip)
            targets.append(list(labels).index(name))
        else:
            skipped[clip.corpus][clip.label] += 1
    return Targets(kept, np.asarray(targets, dtype=np.int64), {k: dict(v) for k, v in skipped.items()})


def score(
    clips: Sequence[Clip], targets: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """The report's ``datasets`` and ``overall`` sections (metrics of argmax predictions)."""
    labels = tuple(labels)
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    corpora = list(dict.fromkeys(c.corpus for c in clips))
    datasets: dict[str, Any] = {}
    for corpus in corpora:
        idx = np.array([i for i, c in enumerate(clips) if c.corpus == corpus])
        entry = compute_metrics(targets[idx], preds[idx], labels).to_dict()
        present = sorted(set(targets[idx].tolist()))
        if len(present) < len(labels):
            sub = np.array(present)
            restricted_pred = sub[probs[idx][:, sub].argmax(axis=1)]
            remap = {c: k for k, c in enumerate(present)}
            r = compute_metrics(
                [remap[t] for t in targets[idx]],
                [remap[p] for p in restricted_pred],
                [labels[c] for c in present],
            )
            entry["restricted"] = {k: v for k, v in r.to_dict().items() if k != "per_class"}
        entry["speakers"] = sorted({clips[i].speaker for i in idx})
        datasets[corpus] = entry
    overall = compute_metrics(targets, preds, labels).to_dict()
    if datasets:
        overall["mean_ua"] = float(np.mean([d["ua"] for d in datasets.values()]))
    return {"datasets": datasets, "overall": overall}


def write_predictions(
    path: Path, clips: Sequence[Clip], targets: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> None:
    """One row per clip: ``path, dataset, speaker, label, pred, p_<label>...``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "dataset", "speaker", "label", "pred", *[f"p_{name}" for name in labels]])
        for clip, target, p in zip(clips, targets, probs, strict=True):
            writer.writerow(
                [
                    str(clip.path),
                    clip.corpus,
                    clip.speaker,
                    labels[int(target)],
                    labels[int(p.argmax())],
                    *[f"{x:.5f}" for x in p],
                ]
            )


def predict_clips(
    classifier: Classifier | Callable[[Any], np.ndarray],
    clips: Sequence[Clip],
    feature_config: FeatureConfig,
    cache_dir: Path | None = None,
    console: Console | None = None,
    batch_windows: int = 64,
) -> np.ndarray:
    """Mean streamer-window probabilities ``(n_clips, n_classes)`` of every clip, with a progress bar."""
    predict = classifier.predict if isinstance(classifier, Classifier) else classifier
    audio = load_audio(clips, feature_config.sample_rate_hz, cache_dir, console)
    with progress_bar(console) as progress:
        task = progress.add_task(f"evaluating {len(clips)} clips", total=len(clips))
        return clip_probabilities(
            audio,
            predict,
            feature_config,
            batch_windows,
            EVAL_HOP_S,
            on_clips=lambda n: progress.advance(task, n),
        )


def evaluate_classifier(
    classifier: Classifier,
    clips: Sequence[Clip],
    mapping: dict[str, str],
    out_json: Path | None = None,
    out_csv: Path | None = None,
    out_png: Path | None = None,
    cache_dir: Path | None = None,
    console: Console | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``classifier`` on ``clips``; write the report JSON, predictions CSV and confusion PNG when asked."""
    labels = classifier.labels
    t = map_to_model(clips, labels, mapping)
    start = time.perf_counter()
    probs = predict_clips(classifier, t.clips, classifier.feature_config, cache_dir, console)
    report = score(t.clips, t.targets, probs, labels)
    report["model"] = {
        "name": classifier.name,
        "path": str(classifier.path),
        "backend": classifier.backend,
        "labels": list(labels),
        "arch": classifier.model_config.arch,
    }
    report["label_map"] = dict(mapping)
    report["skipped"] = t.skipped
    report["windowing"] = {
        "window_s": classifier.feature_config.window_s,
        "hop_s": EVAL_HOP_S,
        "clip_prediction": "mean of the streamer windows' probabilities",
    }
    report["eval_seconds"] = round(time.perf_counter() - start, 1)
    report.update(extra or {})
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=2) + "\n")
    if out_csv is not None:
        write_predictions(out_csv, t.clips, t.targets, probs, labels)
    if out_png is not None and report["datasets"]:
        from train.metrics import metrics_from_confusion

        ms: dict[str, Metrics] = {
            name: metrics_from_confusion(np.array(d["confusion"]), labels)
            for name, d in report["datasets"].items()
        }
        out_png.parent.mkdir(parents=True, exist_ok=True)
        plot_confusion(ms, str(out_png), title=f"{classifier.name} ({classifier.model_config.arch})")
    return report


# ----------------------------------------------------------------------------- finding the clips


def find_clips(data: Path, datasets: Sequence[str] | None) -> tuple[list[Clip], list[str]]:
    """Clips under ``data``: the named corpora in it, or ``data`` itself as one corpus of a known layout
    (a named corpus, a folder per class, or a manifest CSV). Returns the clips and report lines."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"data not found: {data}")
    if datasets:
        names = [corpus_format(name).name for name in datasets]
        if data.is_dir() and all((data / name).is_dir() for name in names):
            clips, reports = load_corpora(data, names)
            return clips, [r.summary() for r in reports.values()]
        if len(names) == 1:
            clips, report = load_corpus(names[0], data)
            return clips, [report.summary()]
        missing = [name for name in names if not (data / name).is_dir()]
        raise FileNotFoundError(f"no folder for {', '.join(missing)} under {data}")
    if data.is_dir() and any(
        (data / name).is_dir() for name in ("ravdess", "tess", "nemo", "urdu", "cremad", "emodb", "savee")
    ):
        clips, reports = load_corpora(data, None)
        return clips, [r.summary() for r in reports.values()]
    layout = detect_corpus(data)
    if layout is None:
        raise ValueError(f"{data}: not a known corpus layout, a folder per class, or a manifest CSV")
    clips, report = load_corpus(layout, data)
    return clips, [report.summary()]


def held_out(clips: list[Clip], meta: dict[str, Any], seed: int | None = None) -> tuple[list[Clip], str]:
    """The clips of the model's test speakers (from its training metadata) for the corpora it trained on;
    every clip of a corpus it never saw. Without metadata: ``default_holdout``'s test speakers."""
    split = meta.get("split") or {}
    trained_on = set(meta.get("datasets") or [])
    if split.get("test"):
        test = set(split["test"])
        how = "the model's recorded test speakers"
    else:
        s = default_holdout(clips, seed if seed is not None else int(meta.get("seed", 0)))
        test = {clips[i].speaker for i in s.test}
        trained_on = {c.corpus for c in clips}
        how = "default_holdout test speakers (the model records no split)"
    kept = [c for c in clips if c.corpus not in trained_on or c.speaker in test]
    return kept, how


def subsample(clips: list[Clip], per_dataset: int, seed: int = 0) -> list[Clip]:
    """At most ``per_dataset`` clips of each corpus (a seeded choice, original order kept)."""
    if per_dataset <= 0:
        return clips
    rng = np.random.default_rng(seed)
    out: list[Clip] = []
    for corpus in dict.fromkeys(c.corpus for c in clips):
        members = [c for c in clips if c.corpus == corpus]
        if len(members) > per_dataset:
            pick = sorted(rng.choice(len(members), size=per_dataset, replace=False).tolist())
            members = [members[i] for i in pick]
        out.extend(members)
    return out


def run(args: Any) -> int:
    """``emostream evaluate``: see ``train.cli.register_evaluate``."""
    from train.labels import parse_map

    console = Console(stderr=True)
    try:
        mapping = parse_map(args.map or "")
        classifier = load_classifier(args.model, backend=args.backend, threads=args.threads)
        datasets = [d for d in (args.datasets or "").split(",") if d.strip()] or None
        clips, load_lines = find_clips(Path(args.data), datasets)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        console.print(f"[red]emostream evaluate: {exc}[/red]")
        return 2
    except Exception as exc:  # ModelFileError and friends: one clear line
        console.print(f"[red]emostream evaluate: {exc}[/red]")
        return 1
    for line in load_lines:
        console.print(line, highlight=False)
    meta = classifier.spec.meta
    mapping = {**dict(meta.get("label_map") or {}), **mapping}
    how = "all speakers"
    if args.speakers == "test":
        clips, how = held_out(clips, meta)
    clips = subsample(clips, args.max_clips, seed=0)
    if not clips:
        console.print("[red]emostream evaluate: no clips to evaluate[/red]")
        return 1
    console.print(f"evaluating {classifier.name} ({classifier.backend}) on {len(clips)} clips ({how})")
    report = evaluate_classifier(
        classifier,
        clips,
        mapping,
        Path(args.report),
        Path(args.predictions) if args.predictions else None,
        Path(args.confusion) if args.confusion else None,
        Path(args.cache) if args.cache else None,
        console,
        extra={"command": " ".join(["emostream", *map(shlex.quote, sys.argv[1:])]), "speakers": how},
    )
    print_summary(report, console)
    return 0


def print_summary(report: dict[str, Any], console: Console) -> None:
    """A small Rich table of UA / WA / macro-F1 per data set."""
    from rich.table import Table

    table = Table(title=f"scores ({report.get('speakers', 'all speakers')})")
    for col in ("data set", "n", "UA %", "WA %", "macro-F1 %", "restricted UA %"):
        table.add_column(col, justify="right")
    rows = [*report["datasets"].items(), ("overall", report["overall"])]
    for name, d in rows:
        r = d.get("restricted")
        table.add_row(
            name,
            str(d["n"]),
            f"{100 * d['ua']:.1f}",
            f"{100 * d['wa']:.1f}",
            f"{100 * d['macro_f1']:.1f}",
            f"{100 * r['ua']:.1f}" if r else "",
        )
    console.print(table)
    skipped = {k: v for k, v in report.get("skipped", {}).items() if v}
    if skipped:
        console.print(f"skipped (labels the model lacks): {skipped}")
