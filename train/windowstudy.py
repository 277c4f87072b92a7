"""`emostream windowstudy`: the STFT window type (hann, hamming, rectangular) compared with everything else equal.

The reference windowing study trained one model per window type on spectrograms. Here each window
is one `train.loop.train` run with the same corpora, held-out speakers (or folds), seed, architecture,
epochs and clip subset; only `FeatureConfig.window` differs. `--model baseline` fits the statistics
baseline (`train.baseline`: log-mel and pitch statistics, logistic regression) per window instead, on
every clip of the same held-out-speaker split: minutes, not hours, on a CPU. Each run lands in `OUT/<window>/`; the
table (test UA / WA / macro-F1 per corpus and overall, training seconds) goes to
`OUT/windowstudy.json` and `OUT/windowstudy.md`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from emostream.models.features import WINDOW_TYPES


def register_windowstudy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "windowstudy",
        help="train one model per STFT window type (hann, hamming, rectangular), all else equal; one table",
        description="For each window type, one `emostream train` run on the same data, split, seed, "
        "architecture, epochs and clips; only the STFT window differs. Runs go to OUT/<window>/, the "
        "table of test scores to OUT/windowstudy.md and OUT/windowstudy.json.",
        epilog="example: emostream windowstudy --data ../shared/data --datasets ravdess,tess,nemo,urdu "
        "--epochs 4 --max-clips 150 --out runs/windowstudy",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="folder of corpora, or one corpus (UrbanSound8K, GTZAN)")
    p.add_argument("--datasets", default=None, help="comma-separated corpora (default as in `emostream train`)")
    p.add_argument("--labels", default=None, help="as in `emostream train` (default 7class for speech, data otherwise)")
    p.add_argument("--windows", default=",".join(WINDOW_TYPES), help="comma-separated window types to compare")
    p.add_argument("--model", choices=("deep", "baseline"), default="deep",
                   help="deep: one `emostream train` run per window; baseline: the statistics baseline per window")
    p.add_argument("--arch", default="bandsplit_bilstm", help="architecture (as in `emostream train`)")
    p.add_argument("--model-settings", default="{}", metavar="JSON", help="architecture settings as JSON")
    p.add_argument("--feature-settings", default="{}", metavar="JSON",
                   help="log-mel settings as JSON (as in `emostream train`); the window type is the study's")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--max-clips", type=int, default=0, help="at most N clips per corpus (0 = all)")
    p.add_argument("--no-augment", action="store_true", help="turn every augmentation off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    p.add_argument("--out", required=True, type=Path, help="output folder (one run per window, the table)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emostream.train.augment import AugmentConfig
    from emostream.train.cli import _check_data, default_labels, json_object, resolve_datasets
    from emostream.train.loop import TrainConfig, train

    console = Console()
    try:
        datasets = resolve_datasets(args.data, args.datasets)
        _check_data(args.data, list(datasets))
        windows = [w.strip() for w in args.windows.split(",") if w.strip()]
        unknown = [w for w in windows if w not in WINDOW_TYPES]
        if unknown or not windows:
            raise ValueError(f"--windows must name some of {', '.join(WINDOW_TYPES)}, got {args.windows!r}")
        settings = json_object(args.model_settings, "--model-settings")
        features = json_object(args.feature_settings, "--feature-settings")
        args.features = features
        command = " ".join(["emostream", *map(shlex.quote, sys.argv[1:])])
        runs: dict[str, dict[str, Any]] = {}
        if args.model == "baseline":
            runs = baseline_study(args, datasets, windows, console)
        for window in windows if args.model == "deep" else ():
            console.rule(f"window {window}")
            cfg = TrainConfig(
                data_dir=str(args.data),
                datasets=datasets,
                labels=args.labels or default_labels(datasets),
                arch=args.arch,
                model_settings=settings,
                feature_settings={**features, "window": window},
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                threads=args.threads,
                out_dir=str(args.out / window),
                cache_dir=str(args.cache) if args.cache else "",
                max_clips_per_dataset=args.max_clips,
                augment=AugmentConfig(enabled=not args.no_augment),
                name=f"windowstudy-{window}",
                command=f"{command}  # window {window}",
            )
            runs[window] = summarise(train(cfg, console))
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        Console(stderr=True).print(f"[red]emostream windowstudy: {exc}[/red]")
        return 2
    study = {"command": command, "model": args.model, "datasets": list(datasets), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "windowstudy.json").write_text(json.dumps(study, indent=2) + "\n")
    (args.out / "windowstudy.md").write_text(markdown(study) + "\n")
    console.print(markdown(study), highlight=False)
    return 0


def baseline_study(args: argparse.Namespace, datasets: tuple[str, ...], windows: list[str], console: Any) -> dict:
    """The statistics baseline per window type on ``default_holdout`` (train speakers -> test speakers)."""
    import time

    from emostream.models.features import FeatureConfig
    from emostream.train.cli import default_labels
    from emostream.train.corpora import load_corpora
    from emostream.train.evaluate import map_to_model
    from emostream.train.labels import resolve_label_set
    from emostream.train.protocols import clip_features, default_cache, fit_baseline
    from emostream.train.splits import default_holdout

    clips_all, _ = load_corpora(args.data, list(datasets))
    label_set = resolve_label_set(args.labels or default_labels(datasets), "", [c.label for c in clips_all])
    mapped = map_to_model(clips_all, label_set.labels, label_set.mapping)
    split = default_holdout(mapped.clips, args.seed)
    runs = {}
    for window in windows:
        console.rule(f"window {window}: statistics baseline")
        started = time.time()
        fc = FeatureConfig(**{**args.features, "window": window})
        x = clip_features(mapped.clips, fc, default_cache(args.cache), console)
        y = mapped.targets
        _, _, report = fit_baseline(x[split.train], y[split.train], [mapped.clips[i] for i in split.test],
                                    x[split.test], y[split.test], label_set.labels)
        runs[window] = {
            "overall": {k: report["overall"][k] for k in ("n", "ua", "wa", "macro_f1")},
            "datasets": {name: {k: d[k] for k in ("n", "ua")} for name, d in report["datasets"].items()},
            "train_seconds": round(time.time() - started, 1),
        }
    return runs


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The figures a window study compares, from one training report."""
    return {
        "overall": {k: report["overall"][k] for k in ("n", "ua", "wa", "macro_f1")},
        "datasets": {name: {k: d[k] for k in ("n", "ua")} for name, d in report["datasets"].items()},
        "train_seconds": report["train"]["seconds"],
        "best_epoch": report["train"]["best_epoch"],
        "best_val_ua": report["train"]["best_val_ua"],
    }


def markdown(study: dict[str, Any]) -> str:
    """One row per window type: test UA per corpus, overall UA / WA / macro-F1, training time."""
    runs = study["runs"]
    corpora = list(dict.fromkeys(name for run in runs.values() for name in run["datasets"]))
    head = "| window | " + " | ".join(f"{c} UA %" for c in corpora) + " | overall UA % | WA % | macro-F1 % | train s |"
    lines = [head, "|---|" + "---:|" * (len(corpora) + 4)]
    for window, run in runs.items():
        cells = [f"{100 * run['datasets'][c]['ua']:.1f}" if c in run["datasets"] else "" for c in corpora]
        o = run["overall"]
        lines.append(
            f"| {window} | " + " | ".join(cells)
            + f" | {100 * o['ua']:.1f} | {100 * o['wa']:.1f} | {100 * o['macro_f1']:.1f} | {run['train_seconds']:.0f} |"
        )
    return "\n".join(lines)
