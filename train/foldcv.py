"""`emostream foldcv`: cross-validation over a corpus's own predefined folds (UrbanSound8K's official protocol).

UrbanSound8K ships ten folds, and its slices of one recording share a fold: the published protocol
trains on nine and tests on the tenth, ten times, and reports the mean accuracy. A random split puts
slices of one street recording on both sides and inflates the figure. Here each fold ``k`` is one
``train.loop.train`` run that tests on fold ``k``, picks its epoch on fold ``k - 1`` (fold 10 for fold
1) and trains on the other eight; the loader's group of a clip is its fold (``train.corpora_tasks``), so
no clip of a held-out fold is ever trained on. Runs land in ``OUT/fold<k>/``; the table (accuracy, UA
and macro-F1 per fold, their mean and standard deviation) in ``OUT/foldcv.json`` and ``OUT/foldcv.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

_FOLD = re.compile(r"^(?P<corpus>[^:]+):fold(?P<k>\d+)$")


def register_foldcv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "foldcv",
        help="cross-validation over a corpus's predefined folds (UrbanSound8K: 10 folds); one table",
        description="One `emostream train` run per fold: test on fold k, select the epoch on fold k-1, train "
        "on the rest; then the mean and standard deviation of the test accuracy over the folds, UrbanSound8K's "
        "official protocol. Runs go to OUT/fold<k>/, the table to OUT/foldcv.md and OUT/foldcv.json.",
        epilog="example: emostream foldcv --data ~/data/UrbanSound8K --arch resnet "
        '--model-settings \'{"variant": "resnet18"}\' --epochs 20 --out runs/us8k-cv',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="the corpus folder (e.g. UrbanSound8K) or a folder holding it",
    )
    p.add_argument("--datasets", default=None, help="the corpus name (default: detected from --data)")
    p.add_argument("--folds", default="", help="comma-separated fold numbers to run (default every fold)")
    p.add_argument("--arch", default="bandsplit_bilstm", help="architecture (as in `emostream train`)")
    p.add_argument("--model-settings", default="{}", metavar="JSON", help="architecture settings as JSON")
    p.add_argument("--feature-settings", default="{}", metavar="JSON", help="log-mel settings as JSON")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--max-clips", type=int, default=0, help="at most N clips per corpus (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    p.add_argument("--out", required=True, type=Path, help="output folder (one run per fold, the table)")
    p.set_defaults(func=_run)


def corpus_folds(groups: set[str]) -> dict[int, str]:
    """Fold number -> group id (``urbansound8k:fold3``) of clips' groups; ValueError when they are not folds."""
    folds = {int(m["k"]): g for g in groups if (m := _FOLD.match(g))}
    if len(folds) < 3 or len(folds) != len(groups):
        raise ValueError(
            f"foldcv needs a corpus whose clips come in predefined folds (UrbanSound8K's fold1..fold10); these "
            f"clips have {len(groups)} groups such as {sorted(groups)[:3]}. For speakers, use `emostream "
            "crosscorpus` or `emostream train` (speakers held out)"
        )
    return dict(sorted(folds.items()))


def plan(folds: dict[int, str], wanted: list[int]) -> list[tuple[int, str, str]]:
    """(fold, test group, validation group = the previous fold, cyclically) for each wanted fold."""
    order = list(folds)
    unknown = [k for k in wanted if k not in folds]
    if unknown:
        raise ValueError(f"no fold(s) {unknown}; the data has folds {order}")
    return [(k, folds[k], folds[order[order.index(k) - 1]]) for k in wanted or order]


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emostream.train.cli import _check_data, default_labels, json_object, resolve_datasets
    from emostream.train.corpora import load_corpora
    from emostream.train.loop import TrainConfig, train
    from emostream.train.windowstudy import summarise

    console = Console()
    try:
        datasets = resolve_datasets(args.data, args.datasets)
        _check_data(args.data, list(datasets))
        settings = json_object(args.model_settings, "--model-settings")
        features = json_object(args.feature_settings, "--feature-settings")
        clips, _ = load_corpora(args.data, list(datasets))
        wanted = [int(k) for k in args.folds.split(",") if k.strip()]
        runs_plan = plan(corpus_folds({c.speaker for c in clips}), wanted)
        command = " ".join(["emostream", *map(shlex.quote, sys.argv[1:])])
        runs: dict[str, dict[str, Any]] = {}
        for k, test, val in runs_plan:
            console.rule(f"fold {k}: test {test}, validation {val}")
            cfg = TrainConfig(
                data_dir=str(args.data),
                datasets=datasets,
                labels=default_labels(datasets),
                arch=args.arch,
                model_settings=settings,
                feature_settings=features,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                threads=args.threads,
                test_groups=(test,),
                val_groups=(val,),
                out_dir=str(args.out / f"fold{k}"),
                cache_dir=str(args.cache) if args.cache else "",
                max_clips_per_dataset=args.max_clips,
                name=f"foldcv-fold{k}",
                command=f"{command}  # fold {k}",
            )
            runs[f"fold{k}"] = summarise(train(cfg, console))
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        Console(stderr=True).print(f"[red]emostream foldcv: {exc}[/red]")
        return 2
    study = {"command": command, "datasets": list(datasets), "runs": runs, "summary": summary(runs)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "foldcv.json").write_text(json.dumps(study, indent=2) + "\n")
    (args.out / "foldcv.md").write_text(markdown(study) + "\n")
    console.print(markdown(study), highlight=False)
    return 0


def summary(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over the folds of accuracy (WA), UA and macro-F1."""
    out = {}
    for key in ("wa", "ua", "macro_f1"):
        values = [run["overall"][key] for run in runs.values()]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    return out


def markdown(study: dict[str, Any]) -> str:
    """One row per fold, then the mean +- standard deviation."""
    lines = [
        "| test fold | clips | accuracy % | UA % | macro-F1 % | train s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fold, run in study["runs"].items():
        o = run["overall"]
        lines.append(
            f"| {fold} | {o['n']} | {100 * o['wa']:.1f} | {100 * o['ua']:.1f} | {100 * o['macro_f1']:.1f} "
            f"| {run['train_seconds']:.0f} |"
        )
    s = study["summary"]
    cells = " | ".join(
        f"{100 * s[k]['mean']:.1f} +- {100 * s[k]['std']:.1f}" for k in ("wa", "ua", "macro_f1")
    )
    lines.append(f"| mean +- sd over {len(study['runs'])} folds | | {cells} | |")
    return "\n".join(lines)
