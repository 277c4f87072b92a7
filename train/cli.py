"""The `emostream train` and `emostream evaluate` subcommands (registered through entry points)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

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
    p.add_argument("--data", required=True, type=Path, help="folder holding one folder per corpus")
    p.add_argument("--datasets", default=DEFAULT_DATASETS, help="comma-separated corpora to train on")
    p.add_argument(
        "--arch",
        default="bandsplit_bilstm",
        help="architecture: bandsplit_bilstm, panns_bandsplit, cnn_bilstm_attn, acnt, cnn14",
    )
    p.add_argument(
        "--model-settings",
        default="{}",
        metavar="JSON",
        help="architecture settings as JSON, e.g. '{\"channels\": [24, 48]}'",
    )
    p.add_argument(
        "--labels",
        default="7class",
        help="a preset (7class, 8class, 4class) or comma-separated labels, e.g. neutral,happy,sad,angry",
    )
    p.add_argument(
        "--map",
        default="",
        metavar="FROM=TO,...",
        help="extra label merges, e.g. calm=neutral (7class and 4class already merge calm into neutral)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, report, model/)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle")
    p.add_argument(
        "--patience", type=int, default=8, help="early stop after N validations without a better val UA"
    )
    p.add_argument("--seed", type=int, default=0)
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

    from train.augment import AugmentConfig
    from train.corpora import corpus_format
    from train.dataset import WindowConfig
    from train.labels import resolve_label_set
    from train.loop import TrainConfig, train

    console = Console()
    err = Console(stderr=True)
    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    try:
        if not args.data.is_dir():
            raise ValueError(f"data directory not found: {args.data}")
        for name in datasets:
            corpus_format(name)
            if not (args.data / corpus_format(name).name).is_dir():
                raise ValueError(f"no {corpus_format(name).name}/ folder under {args.data}")
        resolve_label_set(args.labels, args.map)
        settings = json.loads(args.model_settings)
        augment = json.loads(args.augment)
        if not isinstance(settings, dict) or not isinstance(augment, dict):
            raise ValueError("--model-settings and --augment must be JSON objects")
        augment_config = AugmentConfig.from_dict({**augment, "enabled": not args.no_augment})
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        err.print(f"[red]emostream train: {exc}[/red]")
        return 2
    cfg = TrainConfig(
        data_dir=str(args.data),
        datasets=datasets,
        labels=args.labels,
        label_map=args.map,
        arch=args.arch,
        model_settings=settings,
        feature_settings={"window": args.window} if args.window != "hann" else {},
        epochs=2 if args.quick else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        patience=args.patience,
        seed=args.seed,
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
        choices=("test", "all"),
        default="test",
        help="test: only the model's held-out test speakers of corpora it trained on "
        "(every speaker of other corpora); all: every clip",
    )
    p.add_argument("--report", required=True, type=Path, help="output JSON report")
    p.add_argument("--predictions", type=Path, default=None, help="output CSV, one row per clip")
    p.add_argument("--confusion", type=Path, default=None, help="output PNG of the confusion matrices")
    p.add_argument("--backend", choices=("auto", "onnx", "torchscript", "eager"), default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--max-clips", type=int, default=0, help="at most N clips per corpus (seeded choice; 0 = all)"
    )
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from train.evaluate import run

    return run(args)
