"""The `emostream train` and `emostream evaluate` subcommands (registered through entry points)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.train.perturb import PERTURB_HELP
from emostream.train.recipe import BASELINE_FEATURE_GROUPS, ROBUST_MODEL_SETTINGS

if TYPE_CHECKING:
    from emostream.train.protocols import BaselineVariant

DEFAULT_DATASETS = "ravdess,tess,nemo,urdu"


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on emotional-speech corpora, speakers held out; exports a model directory",
        description="Train on streamer-like 5-s windows of the corpora under --data (one folder per corpus: "
        "ravdess, tess, nemo, urdu, cremad, emodb, savee). Speakers are held out per corpus "
        "(RAVDESS: test actors 17-20, validation 15-16; TESS: test OAF; others: ~20 %% test, ~10 %% "
        "validation); the epoch with the best validation UA is kept, exported to OUT/model "
        "(model.ts, model.onnx, checkpoint.pt) and scored on the test speakers (OUT/report.json).",
        epilog="example: emostream train --data ../shared/data --datasets ravdess,tess,nemo,urdu "
        "--labels 7class --map calm=neutral --out runs/default",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, type=Path,
        help="folder holding one folder per corpus, or one corpus itself (an UrbanSound8K/ or GTZAN folder)",
    )
    p.add_argument(
        "--datasets", default=None,
        help=f"comma-separated corpora to train on (default: the corpus --data is when it is urbansound8k or "
        f"gtzan, else {DEFAULT_DATASETS})",
    )
    p.add_argument(
        "--arch",
        default="bandsplit_bilstm",
        help="architecture: bandsplit_bilstm, panns_bandsplit, cnn_bilstm_attn, acnt, cnn14, resnet "
        "(variant resnet18/34/50, resnext50_32x4d), densenet (densenet121/161), or clip_stats (the statistics "
        "baseline as a streaming model: window log-mel, pitch, rhythm and modulation statistics + a bag of five small hidden-layer "
        "heads (or, with hidden 0, logistic regression), fitted on the statistics in a few minutes, the heads' "
        "epochs (the regression's weight decay) picked by cross-validation over the training speakers; "
        "--epochs is then the number of augmented passes whose windows join the clean ones)",
    )
    p.add_argument(
        "--model-settings",
        default="{}",
        metavar="JSON",
        help="architecture settings as JSON, e.g. '{\"channels\": [24, 48]}'; bandsplit_bilstm runs get "
        f"'{json.dumps(ROBUST_MODEL_SETTINGS['bandsplit_bilstm'])}' (level-invariant, "
        "0.056 GFLOP per window) unless these say otherwise, clip_stats runs "
        f"'{json.dumps(ROBUST_MODEL_SETTINGS['clip_stats'])}' (more window statistics and their rhythm and modulation, a bag of hidden-layer heads; "
        '{"hidden": 0} for the linear layer, {"denoise": 1} to subtract the window\'s noise estimate first, as the '
        "default's third member does); "
        "resnet/densenet: '{\"variant\": \"resnet50\", \"imagenet_weights\": \"resnet50-0676ba61.pth\"}' "
        "fine-tunes torchvision's ImageNet weights from that file",
    )
    p.add_argument(
        "--feature-settings",
        default="{}",
        metavar="JSON",
        help="log-mel settings (models.features.FeatureConfig) as JSON, e.g. "
        "'{\"n_mels\": 128, \"n_fft\": 2048, \"stft_win_samples\": 2048, \"hop_samples\": 500}'; the "
        "feature hop must divide the streamer's 1-s hop",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="a preset (7class, 8class, 4class), comma-separated labels (e.g. neutral,happy,sad,angry), or "
        "'data': every class the corpora hold (sound classes, genres). Default: 7class for speech corpora, "
        "data for urbansound8k and gtzan",
    )
    p.add_argument(
        "--map",
        default="",
        metavar="FROM=TO,...",
        help="extra label merges, e.g. calm=neutral (7class and 4class already merge calm into neutral)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, report, model/)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (clip_stats: augmented passes)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    p.add_argument(
        "--patience", type=int, default=8, help="early stop after N validations without a better val UA"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, sampling and augmentation (default 0)")
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the speaker split (default: --seed); keep it at 0 to train another --seed on the "
        "shipped model's held-out speakers",
    )
    p.add_argument(
        "--balance",
        type=float,
        default=0.5,
        help="corpus- and speaker-balanced sampling: shares proportional to n_clips**(1-B); 0 = every clip once",
    )
    p.add_argument(
        "--ema-decay", type=float, default=0.998, help="validate and keep a moving average of the weights (0 = off)"
    )
    p.add_argument(
        "--select",
        choices=("mean_corpus_ua", "pooled_ua"),
        default="pooled_ua",
        help="model selection on the validation speakers: one pooled UA, or the mean of the per-corpus UAs "
        "(each over the corpus's own classes)",
    )
    p.add_argument(
        "--fold-merged",
        action="store_true",
        help="train the labels that --labels/--map merge (calm -> neutral) as classes of their own; the "
        "exported model sums their probabilities into the class they map to, so it has the --labels classes",
    )
    p.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="mix pairs of training windows' log-mel with weights from Beta(ALPHA, ALPHA) (0 = off; 0.2-0.4 usual)",
    )
    p.add_argument("--mixup-prob", type=float, default=0.5, help="share of batches mixed when --mixup > 0")
    p.add_argument(
        "--adversary",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="clip_stats with a bag of heads: train each head against a speaker classifier on its hidden "
        "units (gradient reversal times WEIGHT, e.g. 0.1), which penalises what tells the training speakers "
        "apart (0 = off)",
    )
    p.add_argument("--window", choices=("hann", "hamming", "rectangular"), default="hann", help="STFT window")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-augment", action="store_true", help="turn every augmentation off")
    p.add_argument(
        "--augment",
        default="{}",
        metavar="JSON",
        help='augmentation settings (train.augment.AugmentConfig) as JSON, e.g. \'{"p_noise": 0.2}\'',
    )
    p.add_argument(
        "--p-join", type=float, default=0.3, help="probability a window joins 2-3 same-speaker clips"
    )
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    p.add_argument("--max-clips", type=int, default=0, help="use at most N clips per corpus (0 = all)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 epochs on 120 clips per corpus")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emostream.train.augment import AugmentConfig
    from emostream.train.dataset import WindowConfig
    from emostream.train.labels import DATA_LABELS, resolve_label_set
    from emostream.train.loop import TrainConfig, train

    console = Console()
    err = Console(stderr=True)
    try:
        datasets = resolve_datasets(args.data, args.datasets)
        labels = args.labels or default_labels(datasets)
        _check_data(args.data, list(datasets))
        if labels != DATA_LABELS:
            resolve_label_set(labels, args.map)
        settings = json_object(args.model_settings, "--model-settings")
        augment = json_object(args.augment, "--augment")
        features = json_object(args.feature_settings, "--feature-settings")
        augment_config = AugmentConfig.from_dict({**augment, "enabled": not args.no_augment})
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        err.print(f"[red]emostream train: {exc}[/red]")
        return 2
    cfg = TrainConfig(
        data_dir=str(args.data),
        datasets=datasets,
        labels=labels,
        label_map=args.map,
        arch=args.arch,
        model_settings=settings,
        feature_settings={**features, **({"window": args.window} if args.window != "hann" else {})},
        epochs=2 if args.quick else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        patience=args.patience,
        seed=args.seed,
        split_seed=args.split_seed,
        balance=args.balance,
        ema_decay=args.ema_decay,
        select=args.select,
        fold_merged=args.fold_merged,
        mixup=args.mixup,
        mixup_prob=args.mixup_prob,
        adversary=args.adversary,
        threads=args.threads,
        out_dir=str(args.out),
        resume=args.resume,
        cache_dir=str(args.cache) if args.cache else "",
        max_clips_per_dataset=120 if args.quick and not args.max_clips else args.max_clips,
        name=args.out.name,
        command=" ".join(["emostream", *map(shlex.quote, sys.argv[1:])]),
        windows=WindowConfig(p_join=args.p_join),
        augment=augment_config,
    )
    try:
        train(cfg, console)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]emostream train: {exc}[/red]")
        return 2
    return 0


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model on labelled clips as the streamer runs it; JSON report, predictions CSV",
        description="Each clip is cut into the streamer's 5-s windows (hop 1 s, end-aligned padding) and "
        "its prediction is the mean of the windows' probabilities, computed by the exported model "
        "(ONNX Runtime by default). --data is a folder of corpora, one corpus (known layout), a folder "
        "per class, or a manifest CSV (relpath, speaker, label). Labels are mapped to the model's "
        "(its training map, e.g. calm=neutral, plus --map); clips with labels the model lacks are "
        "skipped and counted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="default", help="model directory, .onnx/.ts/.pt file, or 'default'")
    p.add_argument(
        "--data", required=True, type=Path, help="corpora folder, a corpus, a folder per class, or a CSV"
    )
    p.add_argument("--datasets", default="", help="comma-separated corpora under --data (default: all found)")
    p.add_argument("--map", default="", metavar="FROM=TO,...", help="extra label mapping, e.g. calm=neutral")
    p.add_argument(
        "--speakers",
        choices=("test", "val", "all"),
        default="test",
        help="test: only speakers the model never saw (its held-out test speakers, any speaker of its "
        "corpora that was in no part of its split, every speaker of other corpora); val: its validation "
        "speakers only (to choose between models without touching the test speakers); all: every clip",
    )
    p.add_argument("--report", required=True, type=Path, help="output JSON report")
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="output CSV, one row per clip; with --perturb also a pred@COND column per condition: the class "
        "predicted on the clip's perturbed copy",
    )
    p.add_argument("--confusion", type=Path, default=None, help="output PNG of the confusion matrices")
    p.add_argument(
        "--markdown", type=Path, default=None, help="output Markdown: scores, robustness and confusion tables"
    )
    p.add_argument("--backend", choices=("auto", "onnx", "torchscript", "eager"), default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--max-clips", type=int, default=0, help="at most N clips per corpus (seeded choice; 0 = all)"
    )
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    p.add_argument(
        "--perturb",
        default="",
        metavar="COND,...",
        help="robustness report: re-score the same clips under each condition and report UA per condition "
        "and corpus, and how many clips' predicted class each condition changed; conditions: " + PERTURB_HELP + "; e.g. --perturb gain:-12,gain:+12,phone,noise:10,reverb",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from emostream.train.evaluate import run

    return run(args)


def register_crosscorpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crosscorpus",
        help="leave-one-corpus-out: train on the other corpora, score every clip of the held-out one",
        description="For every corpus of --datasets, train on the others and score all clips of it on the "
        "four classes they share (neutral, happy, sad, angry; calm as neutral): the statistics baseline "
        "(log-mel and pitch statistics + logistic regression) always, and with --deep a streaming model "
        "trained with the shipped model's recipe. Writes OUT/crosscorpus.json and OUT/crosscorpus.md.",
        epilog="examples: emostream crosscorpus --data ../shared/data --out runs/loco --deep --epochs 12; "
        "emostream crosscorpus --data ../shared/data --out runs/loco_noise --combine runs/loco --combine "
        "runs/loco_stats --perturb phone,noise:10,reverb (earlier runs' fold models, scored again under "
        "each condition; nothing is trained)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _corpus_options(p, "comma-separated corpora (each is held out once)")
    p.add_argument("--out", required=True, type=Path, help="output folder (report, one training run per fold)")
    p.add_argument("--deep", action="store_true", help="also train and score a streaming model per fold (slow)")
    p.add_argument("--epochs", type=int, default=12, help="epochs per deep fold")
    p.add_argument("--max-clips", type=int, default=0, help="deep folds: at most N clips per corpus (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--hold-out",
        default="",
        metavar="CORPORA",
        help="comma-separated corpora of --datasets to hold out, one fold each, each trained on all the "
        "other corpora of --datasets (default: every corpus: the full protocol)",
    )
    p.add_argument(
        "--arch",
        default="bandsplit_bilstm",
        help="deep folds: the architecture, as `emostream train --arch` takes it (clip_stats: the statistics "
        "baseline as a level-invariant streaming model, a few minutes per fold with --epochs 2)",
    )
    p.add_argument(
        "--model-settings",
        default="{}",
        metavar="JSON",
        help="deep folds: architecture settings as `emostream train --model-settings` takes them, e.g. "
        "'{\"pitch_absolute\": false}' (with --feature-settings '{\"pitch\": true}')",
    )
    p.add_argument(
        "--feature-settings",
        default="{}",
        metavar="JSON",
        help="deep folds: log-mel settings as `emostream train --feature-settings` takes them",
    )
    p.add_argument(
        "--augment",
        default="{}",
        metavar="JSON",
        help="deep folds: augmentation settings as `emostream train --augment` takes them, e.g. "
        "'{\"level_dbfs\": [-50, -6]}'",
    )
    p.add_argument(
        "--combine",
        action="append",
        type=Path,
        default=[],
        metavar="RUN",
        help="an earlier crosscorpus --out folder (repeat for several): each fold's models in them (and this "
        "run's deep one) become one ensemble, scored on the held-out corpus as its own column, e.g. "
        "--combine runs/loco_rp --combine runs/loco_stats",
    )
    for band in ("wide", "narrow"):
        p.add_argument(
            f"--combine-{band}",
            action="append",
            type=Path,
            default=[],
            metavar="RUN",
            help=f"as --combine, but in each fold's ensemble these models score only {band}band windows (as "
            f"`emostream ensemble --{band}` tags them; the ensemble detects narrowband audio per window)",
        )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the training corpora's speaker split (default: --seed); with another --seed, a second "
        "draw of a recipe's training on the same split, which --combine can mix with the other runs' folds",
    )
    p.add_argument(
        "--adversary",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="deep folds of --arch clip_stats with a bag of heads: the speaker adversary's weight, as in "
        "`emostream train --adversary` (0 = off)",
    )
    p.add_argument(
        "--perturb",
        default="",
        metavar="COND,...",
        help="robustness on corpora never heard: score every column again on the held-out corpus under each "
        "condition, as `emostream evaluate --perturb` does (the baseline's statistics computed again on the "
        "changed audio; each condition costs about one more clean scoring of every column); conditions: "
        + PERTURB_HELP,
    )
    _baseline_variant_options(p)
    p.set_defaults(func=_run_crosscorpus)


def json_object(text: str, option: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or a ValueError that names ``option``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object, got {text!r}")
    return value


def _baseline_variant_options(p: argparse.ArgumentParser) -> None:
    """--without and --speaker-norm: what the statistics baseline is given (for ablations)."""
    p.add_argument(
        "--without",
        default="",
        metavar="GROUPS",
        help="statistics baseline: leave out these comma-separated feature groups "
        f"({', '.join(BASELINE_FEATURE_GROUPS)})",
    )
    p.add_argument(
        "--speaker-norm",
        action="store_true",
        help="statistics baseline: subtract each speaker's mean statistics over all of that speaker's clips "
        "(enrolment-style; assumes every speaker's clips are known in advance, test speakers included)",
    )


def _baseline_variant(args: argparse.Namespace) -> BaselineVariant:
    from emostream.train.protocols import BaselineVariant  # lazily: torch

    return BaselineVariant(tuple(comma_list(args.without)), bool(args.speaker_norm))


def _corpus_options(p: argparse.ArgumentParser, datasets_help: str) -> None:
    """--data, --datasets, --seed and --cache, as the protocol commands take them."""
    p.add_argument("--data", required=True, type=Path, help="folder holding one folder per corpus")
    p.add_argument("--datasets", default=DEFAULT_DATASETS, help=datasets_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")


def _run_crosscorpus(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emostream.models.modelfile import ModelFileError
    from emostream.train.augment import AugmentConfig
    from emostream.train.perturb import Perturbation
    from emostream.train.protocols import default_cache, run_crosscorpus

    console = Console()
    datasets = list(comma_list(args.datasets))
    try:
        _check_data(args.data, datasets)
        augment = AugmentConfig.from_dict(json_object(args.augment, "--augment"))
        perturbations = Perturbation.parse_list(args.perturb) if args.perturb else []
        run_crosscorpus(
            args.data,
            datasets,
            args.out,
            default_cache(args.cache),
            console,
            deep=args.deep,
            epochs=args.epochs,
            threads=args.threads,
            seed=args.seed,
            max_clips=args.max_clips,
            held_out=list(comma_list(args.hold_out)) or None,
            variant=_baseline_variant(args),
            model_settings=json_object(args.model_settings, "--model-settings"),
            feature_settings=json_object(args.feature_settings, "--feature-settings"),
            arch=args.arch,
            combine=[*args.combine, *args.combine_wide, *args.combine_narrow],
            combine_bands={
                **{str(run): "wide" for run in args.combine_wide},
                **{str(run): "narrow" for run in args.combine_narrow},
            },
            augment=augment,
            perturbations=perturbations,
            split_seed=args.split_seed,
            adversary=args.adversary,
        )
    except (ValueError, TypeError, FileNotFoundError, ModelFileError) as exc:
        Console(stderr=True).print(f"[red]emostream crosscorpus: {exc}[/red]")
        return 2
    return 0


def register_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="the statistics baseline (log-mel + pitch statistics, logistic regression) on held-out speakers",
        description="Train the statistics baseline on the training speakers of the split the shipped model "
        "uses (train.splits.default_holdout) and score it per corpus on the test speakers: the floor a "
        "deep model must beat, in the same table.",
        epilog="example: emostream baseline --data ../shared/data --report runs/baseline.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _corpus_options(p, "comma-separated corpora")
    p.add_argument("--labels", default="7class", help="a preset (7class, 8class, 4class) or comma-separated labels")
    p.add_argument("--report", required=True, type=Path, help="output JSON report")
    _baseline_variant_options(p)
    p.add_argument(
        "--perturb",
        default="",
        metavar="COND,...",
        help="robustness: score the same test clips under each condition, as `emostream evaluate --perturb` "
        "does (the statistics computed again on the changed audio); conditions: " + PERTURB_HELP,
    )
    p.set_defaults(func=_run_baseline)


def _run_baseline(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emostream.train.perturb import Perturbation
    from emostream.train.protocols import default_cache, run_baseline

    console = Console()
    datasets = list(comma_list(args.datasets))
    try:
        _check_data(args.data, datasets)
        perturbations = Perturbation.parse_list(args.perturb) if args.perturb else []
        run_baseline(
            args.data,
            datasets,
            args.labels,
            args.report,
            default_cache(args.cache),
            console,
            args.seed,
            variant=_baseline_variant(args),
            perturbations=perturbations,
        )
    except (ValueError, FileNotFoundError) as exc:
        Console(stderr=True).print(f"[red]emostream baseline: {exc}[/red]")
        return 2
    return 0


def _check_data(data: Path, datasets: list[str]) -> None:
    """ValueError unless ``data`` holds a folder for every named corpus (or is the one corpus named)."""
    from emostream.train.corpora import corpus_format, corpus_root

    if not data.is_dir():
        raise ValueError(f"data directory not found: {data}")
    for name in datasets:
        if not corpus_root(data, name).is_dir():
            raise ValueError(f"no {corpus_format(name).name}/ folder under {data}, nor is {data} that corpus")


def comma_list(text: str) -> tuple[str, ...]:
    """The names of a comma-separated option (``--datasets``, ``--hold-out``), blanks dropped."""
    return tuple(d.strip() for d in text.split(",") if d.strip())


def resolve_datasets(data: Path, text: str | None) -> tuple[str, ...]:
    """``--datasets`` as given, else the task corpus ``data`` is (urbansound8k, gtzan), else the default four."""
    if text:
        return comma_list(text)
    from emostream.train.corpora import detect_corpus
    from emostream.train.corpora_tasks import is_speech_corpus

    found = detect_corpus(data) if data.is_dir() else None
    if found is not None and not is_speech_corpus(found):
        return (found,)
    return tuple(DEFAULT_DATASETS.split(","))


def default_labels(datasets: tuple[str, ...]) -> str:
    """``data`` (the corpora's own classes) when any corpus is not speech, else ``7class``."""
    from emostream.train.corpora_tasks import is_speech_corpus
    from emostream.train.labels import DATA_LABELS

    return "7class" if all(is_speech_corpus(d) for d in datasets) else DATA_LABELS
