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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from emostream.models.features import FeatureConfig
from emostream.models.modelfile import Classifier, load_classifier
from emostream.train.corpora import Clip, corpus_format, detect_corpus, load_corpora, load_corpus
from emostream.train.dataset import EVAL_HOP_S, clip_probabilities, load_audio, progress_bar, to_float
from emostream.train.labels import normalise_label
from emostream.train.metrics import Metrics, compute_metrics, plot_confusion
from emostream.train.perturb import Perturbation
from emostream.train.report import markdown_report, print_summary
from emostream.train.splits import default_holdout


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
        entry["per_speaker"] = per_speaker(clips, targets, preds, labels, idx)
        entry["one_clip_ua"] = one_clip_ua(targets[idx])
        datasets[corpus] = entry
    overall = compute_metrics(targets, preds, labels).to_dict()
    if datasets:
        overall["mean_ua"] = float(np.mean([d["ua"] for d in datasets.values()]))
    return {"datasets": datasets, "overall": overall}


def per_speaker(
    clips: Sequence[Clip], targets: np.ndarray, preds: np.ndarray, labels: tuple[str, ...], idx: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per speaker of the clips ``idx`` (sorted by name): clips, how many classes the speaker has, and UA
    over those classes alone. A corpus's UA pools its speakers' clips per class, so one speaker with
    most of the clips (nEMO's test set) or with one emotion only (URDU's) decides it; this shows who."""
    speakers = np.array([clips[i].speaker for i in idx])
    out: dict[str, dict[str, Any]] = {}
    for speaker in sorted(set(speakers.tolist())):
        mine = idx[speakers == speaker]
        m = compute_metrics(targets[mine], preds[mine], labels)
        out[speaker] = {"n": m.n, "classes": int(len(np.unique(targets[mine]))), "ua": m.ua}
    return out


def one_clip_ua(targets: np.ndarray) -> float:
    """The most that one clip's prediction can move a corpus's UA: one clip of its rarest class
    (``1 / (classes present x that class's clips)``); 0 without clips."""
    counts = np.bincount(targets) if len(targets) else np.zeros(0, np.int64)
    present = counts[counts > 0]
    return float(1.0 / (len(present) * present.min())) if len(present) else 0.0


def changed_predictions(clips: Sequence[Clip], preds: np.ndarray, clean_preds: np.ndarray) -> dict[str, int]:
    """Per corpus, then ``overall``: how many clips' predicted class differs from the clean prediction."""
    differs = np.asarray(preds) != np.asarray(clean_preds)
    out = {corpus: 0 for corpus in dict.fromkeys(c.corpus for c in clips)}
    for clip, d in zip(clips, differs, strict=True):
        out[clip.corpus] += int(d)
    out["overall"] = int(differs.sum())
    return out


def robustness(
    classifier: Classifier,
    clips: Sequence[Clip],
    targets: np.ndarray,
    labels: Sequence[str],
    perturbations: Sequence[Perturbation],
    cache_dir: Path | None = None,
    console: Console | None = None,
    clean_probs: np.ndarray | None = None,
    predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """UA (and restricted UA where a corpus has fewer classes) of every condition, overall and per corpus,
    on the same clips; ``clean_probs``, the clips' probabilities already computed on clean audio, are
    reused for a ``clean`` condition. With them (or a ``clean`` condition scored first), each condition
    also counts the clips whose predicted class it changed (``changed``): a measure of invariance that
    UA's gains and losses cannot cancel, and whose step is one clip. A ``predictions`` dict receives
    every condition's predicted class per clip (name -> indices into ``labels``), for the CSV."""
    fc = classifier.feature_config
    audio = load_audio(clips, fc.sample_rate_hz, cache_dir, console)
    clean_preds = clean_probs.argmax(axis=1) if clean_probs is not None else None
    out: dict[str, Any] = {}
    for pert in perturbations:
        if pert.kind == "clean" and clean_probs is not None:
            probs = clean_probs
        else:
            altered = [pert.apply(to_float(a), fc.sample_rate_hz, seed=i) for i, a in enumerate(audio)]
            with progress_bar(console) as progress:
                task = progress.add_task(f"{pert.name}: {len(clips)} clips", total=len(clips))
                probs = clip_probabilities(
                    altered, classifier.predict, fc, 64, EVAL_HOP_S, on_clips=partial(progress.advance, task)
                )
        preds = probs.argmax(axis=1)
        if predictions is not None:
            predictions[pert.name] = preds
        if pert.kind == "clean" and clean_preds is None:
            clean_preds = preds
        changed = changed_predictions(clips, preds, clean_preds) if clean_preds is not None else None
        out[pert.name] = condition_scores(score(clips, targets, probs, labels), changed)
    return out


def condition_scores(scored: dict[str, Any], changed: dict[str, int] | None = None) -> dict[str, Any]:
    """One condition's entry of a robustness report: UA overall, mean over corpora, and per corpus (with
    the restricted UA where a corpus has fewer classes), from a ``score`` report; with ``changed``
    (``changed_predictions``), how many clips' predicted class the condition changed, overall and per corpus."""
    def one(name: str, d: dict[str, Any]) -> dict[str, Any]:
        entry = {"ua": d["ua"], **({"restricted_ua": d["restricted"]["ua"]} if "restricted" in d else {})}
        if changed is not None:
            entry["changed"] = changed[name]
        return entry

    return {
        "ua": scored["overall"]["ua"],
        "mean_ua": scored["overall"].get("mean_ua"),
        **({"changed": changed["overall"]} if changed is not None else {}),
        "datasets": {name: one(name, d) for name, d in scored["datasets"].items()},
    }


def write_predictions(
    path: Path,
    clips: Sequence[Clip],
    targets: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    conditions: dict[str, np.ndarray] | None = None,
) -> None:
    """One row per clip: ``path, dataset, speaker, label, pred, p_<label>...``, then with ``conditions``
    (``robustness``'s per-condition predictions) ``pred@<condition>`` for every condition but clean: the
    class predicted on the clip's perturbed copy, so each changed prediction the report counts can be
    found (the rows where ``pred@<condition>`` differs from ``pred``)."""
    altered = {name: preds for name, preds in (conditions or {}).items() if name != "clean"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["path", "dataset", "speaker", "label", "pred", *[f"p_{name}" for name in labels], *[f"pred@{name}" for name in altered]]
        )
        for i, (clip, target, p) in enumerate(zip(clips, targets, probs, strict=True)):
            writer.writerow(
                [
                    str(clip.path),
                    clip.corpus,
                    clip.speaker,
                    labels[int(target)],
                    labels[int(p.argmax())],
                    *[f"{x:.5f}" for x in p],
                    *[labels[int(preds[i])] for preds in altered.values()],
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
    perturbations: Sequence[Perturbation] = (),
) -> dict[str, Any]:
    """Score ``classifier`` on ``clips``; write the report JSON, predictions CSV and confusion PNG when asked.

    With ``perturbations``, the same clips are scored again under each condition (``train.perturb``)
    and the report's ``robustness`` section holds UA per condition, overall and per corpus, and how
    many clips' predicted class each condition changed; the predictions CSV then also holds each
    condition's predicted class per clip (``pred@<condition>``)."""
    labels = classifier.labels
    t = map_to_model(clips, labels, mapping)
    start = time.perf_counter()
    probs = predict_clips(classifier, t.clips, classifier.feature_config, cache_dir, console)
    report = score(t.clips, t.targets, probs, labels)
    condition_preds: dict[str, np.ndarray] = {}
    if perturbations:
        report["robustness"] = robustness(
            classifier,
            t.clips,
            t.targets,
            labels,
            perturbations,
            cache_dir,
            console,
            clean_probs=probs,
            predictions=condition_preds,
        )
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
        write_predictions(out_csv, t.clips, t.targets, probs, labels, condition_preds)
    if out_png is not None and report["datasets"]:
        from emostream.train.metrics import metrics_from_confusion

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


def held_out(
    clips: list[Clip], meta: dict[str, Any], seed: int | None = None
) -> tuple[list[Clip], str, dict[str, dict[str, int]]]:
    """The clips of speakers the model never saw in training or model selection: its recorded test
    speakers, speakers of its corpora that were in no part of its split (new recordings), and every
    clip of a corpus it never saw. Returns the clips, how they were chosen, and per corpus how many
    clips were found, kept and dropped (as training or validation speakers).

    Models that record their training speakers (``split.train``) count any other speaker as unseen;
    older ones record only test and validation speakers, so their speakers are recomputed with
    ``default_holdout`` (same seed) and a speaker it does not place is counted as unseen only if
    the recomputed test and validation parts equal the recorded ones. Without metadata:
    ``default_holdout``'s test speakers."""
    split = meta.get("split") or {}
    trained_on = set(meta.get("datasets") or [])
    # the split's own seed (--split-seed); older models record only the training seed, which also split them
    seed = seed if seed is not None else int(split.get("seed", meta.get("seed", 0)))
    seen: set[str]
    if split.get("test") and "train" in split:
        seen = set(split["train"]) | set(split.get("val") or [])
        how = "unseen speakers: the model's test speakers and any speaker not in its training or validation parts"
    elif split.get("test"):
        ours = [c for c in clips if c.corpus in trained_on]
        s = default_holdout(ours, seed) if ours else None
        recomputed = (
            ({ours[i].speaker for i in s.test}, {ours[i].speaker for i in s.val}) if s is not None else None
        )
        if recomputed == (set(split["test"]), set(split.get("val") or [])) and s is not None:
            seen = {ours[i].speaker for i in s.train} | set(split.get("val") or [])
            how = "unseen speakers: the model's test speakers (training speakers recomputed with default_holdout)"
        else:
            test = set(split["test"])
            seen = {c.speaker for c in ours if c.speaker not in test}
            how = (
                "the model's recorded test speakers only (it records no training speakers and the split "
                "cannot be recomputed on this data)"
            )
    else:
        s = default_holdout(clips, seed)
        seen = {clips[i].speaker for i in (*s.train, *s.val)}
        trained_on = {c.corpus for c in clips}
        how = "default_holdout test speakers (the model records no split)"
    kept, counts = _keep_clips(clips, lambda c: not (c.corpus in trained_on and c.speaker in seen))
    return kept, how, counts


DROPPED_KEYS = {"test": "dropped_seen_speakers", "val": "dropped_not_val_speakers", "all": "dropped"}
"""The report's ``clip_filter`` key for the clips each ``--speakers`` choice drops, and why."""


def _keep_clips(
    clips: list[Clip], keep: Callable[[Clip], bool], dropped: str = DROPPED_KEYS["test"]
) -> tuple[list[Clip], dict[str, dict[str, int]]]:
    """The clips ``keep`` accepts, and per corpus how many were found, kept and dropped (the report's
    ``clip_filter``; ``dropped`` names the key of the dropped count)."""
    kept: list[Clip] = []
    counts: dict[str, dict[str, int]] = {}
    for c in clips:
        entry = counts.setdefault(c.corpus, {"found": 0, "kept": 0, dropped: 0})
        entry["found"] += 1
        if keep(c):
            entry["kept"] += 1
            kept.append(c)
        else:
            entry[dropped] += 1
    return kept, counts


def validation_clips(clips: list[Clip], meta: dict[str, Any]) -> tuple[list[Clip], str, dict[str, dict[str, int]]]:
    """The clips of the model's recorded validation speakers: for choosing between trained models (an
    ensemble's members, a run's seeds) without looking at the test speakers. Raises ValueError when the
    model records none."""
    val = set((meta.get("split") or {}).get("val") or [])
    if not val:
        raise ValueError("the model records no validation speakers (--speakers val needs a model trained with a split)")
    kept, counts = _keep_clips(clips, lambda c: c.speaker in val, DROPPED_KEYS["val"])
    return kept, "the model's validation speakers (for model selection; not a held-out score)", counts


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
    from emostream.train.labels import parse_map

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
    _, counts = _keep_clips(clips, lambda c: True, DROPPED_KEYS["all"])
    if args.speakers == "test":
        clips, how, counts = held_out(clips, meta)
    elif args.speakers == "val":
        try:
            clips, how, counts = validation_clips(clips, meta)
        except ValueError as exc:
            console.print(f"[red]emostream evaluate: {exc}[/red]")
            return 2
    clips = subsample(clips, args.max_clips, seed=0)
    for corpus, n in Counter(c.corpus for c in clips).items():
        counts[corpus]["after_max_clips"] = n
    why = {"test": "speakers the model trained or was selected on", "val": "not validation speakers", "all": "none"}
    for corpus, c in counts.items():
        console.print(
            f"{corpus}: {c['found']} clips found, {c['kept']} kept, {c[DROPPED_KEYS[args.speakers]]} dropped "
            f"({why[args.speakers]})",
            highlight=False,
        )
    if not clips:
        console.print("[red]emostream evaluate: no clips to evaluate[/red]")
        return 1
    try:
        perturbations = Perturbation.parse_list(args.perturb) if args.perturb else []
    except ValueError as exc:
        console.print(f"[red]emostream evaluate: {exc}[/red]")
        return 2
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
        extra={
            "command": " ".join(["emostream", *map(shlex.quote, sys.argv[1:])]),
            "speakers": how,
            "clip_filter": counts,
        },
        perturbations=perturbations,
    )
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_report(report))
    print_summary(report, console)
    return 0
