"""The `emostream` console script: subcommands are plugged in through the `emostream.commands` entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

ORDER = ("live", "demo", "serve", "replay", "train", "evaluate", "export")


def _registrars() -> dict[str, EntryPoint]:
    """Each entry point names a function ``register(subparsers)`` that adds one subcommand."""
    found = {ep.name: ep for ep in entry_points(group="emostream.commands")}
    ordered = sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return {name: found[name] for name in ordered}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time streaming speech emotion recognition: a live terminal meter, a WebSocket "
        "feed, offline replay, and the training of the models it runs.",
        epilog="Run 'emostream COMMAND --help' for a command's options. Start with 'emostream live' "
        "(microphone) or 'emostream demo' (bundled clip).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, ep in _registrars().items():
        try:
            register: Callable[[argparse._SubParsersAction], None] = ep.load()
            register(sub)
        except Exception as exc:  # a broken plug-in must not take the other commands down
            print(f"emostream: command {name!r} is unavailable: {exc}", file=sys.stderr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a training checkpoint to a model directory (TorchScript + ONNX, config embedded)",
        description="Write DIR/model.ts (TorchScript), DIR/model.onnx and DIR/checkpoint.pt, each carrying the "
        "feature settings, model settings and label names, so the streamer needs nothing else.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--name", help="the model's name in its metadata (default: the checkpoint's)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from emostream.models.modelfile import ModelFileError, export_model, load_checkpoint, load_classifier

    try:
        ckpt = load_checkpoint(args.checkpoint)
        if args.name:
            ckpt = replace(ckpt, spec=replace(ckpt.spec, meta={**ckpt.spec.meta, "name": args.name}))
        out = export_model(ckpt, args.out, opset=args.opset)
        clf = load_classifier(out, backend="auto")
    except ModelFileError as exc:
        print(f"emostream export: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.checkpoint} -> {out} ({clf.model_config.arch}, labels: {', '.join(clf.labels)})")
    return 0


def register_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="combine trained models into one model that averages their class probabilities",
        description="Write DIR (model.ts, model.onnx, checkpoint.pt) holding every MODEL: its output is the mean "
        "of the members' class probabilities, so the streamer, 'emostream evaluate' and the benchmarks use it "
        "like any model. Members must share feature settings, labels, label mapping and speaker split (so its "
        "held-out speakers stay unheard). Each member adds its cost per window: two members cost twice one.",
        epilog="examples: emostream ensemble runs/a/model runs/b/model --out runs/ab/model; "
        "emostream ensemble models/default@0,1 runs/c/model --out runs/abc (the default's first two members "
        "and another model); emostream ensemble models/default@1 --out runs/member1 (one member alone)",
    )
    p.add_argument(
        "models",
        nargs="+",
        type=Path,
        metavar="MODEL",
        help="model directories or checkpoints (>= 2); MODEL@I,J takes only members I, J (from 0) of an "
        "ensemble, and one MODEL@I,J alone writes those members on their own",
    )
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--name", default="", help="the model's name in its metadata (default: the output folder's)")
    p.add_argument(
        "--wide",
        default="",
        metavar="I,J",
        help="members (counted from 0 over the combined list, an ensemble's members one by one) that score "
        "only wideband windows; with --narrow the model detects, per window, whether the audio is "
        "narrowband (nothing above about 4 kHz: a telephone line, a narrowband headset)",
    )
    p.add_argument(
        "--narrow",
        default="",
        metavar="I,J",
        help="members that score only narrowband windows (e.g. clip_stats with --model-settings "
        "'{\"bins\": [6, 45]}', the telephone band); members in neither list score every window",
    )
    p.add_argument(
        "--narrowband-threshold",
        type=float,
        default=None,
        metavar="DB",
        help="the detector's threshold: a window is narrowband where its power above 4.1 kHz is this many "
        "dB under its power in the telephone band, or more (default -55; soft over 2.5 dB)",
    )
    p.set_defaults(func=_run_ensemble)


def _member_bands(wide: str, narrow: str) -> dict[int, str]:
    """``--wide`` and ``--narrow`` as member index -> band (ValueError on a bad list or a member in both)."""
    bands: dict[int, str] = {}
    for band, text in (("wide", wide), ("narrow", narrow)):
        for item in filter(None, (t.strip() for t in text.split(","))):
            if not item.isdigit():
                raise ValueError(f"--{band} lists member indices from 0, e.g. 1,2; got {text!r}")
            if int(item) in bands:
                raise ValueError(f"member {item} is in --wide and --narrow, or twice")
            bands[int(item)] = band
    return bands


def _run_ensemble(args: argparse.Namespace) -> int:
    import shlex

    from emostream.models.ensemble import parse_model_arg, write_ensemble
    from emostream.models.flops import describe
    from emostream.models.modelfile import ModelFileError, load_classifier

    if len(args.models) < 2 and parse_model_arg(args.models[0])[1] is None:
        print("emostream ensemble: give at least two models (or one ensemble's members, MODEL@I,J)", file=sys.stderr)
        return 2
    command = " ".join(["emostream", "ensemble", *map(shlex.quote, sys.argv[2:])]) if len(sys.argv) > 2 else ""
    try:
        bands = _member_bands(args.wide, args.narrow)
    except ValueError as exc:
        print(f"emostream ensemble: {exc}", file=sys.stderr)
        return 2
    try:
        out = write_ensemble(
            args.models, args.out, name=args.name, command=command, bands=bands, threshold_db=args.narrowband_threshold
        )
        clf = load_classifier(out, backend="auto")
    except ModelFileError as exc:
        print(f"emostream ensemble: {exc}", file=sys.stderr)
        return 1
    cost = describe(clf.model_config, clf.spec.feature_config)
    n = len(clf.model_config.settings.get("members") or [0])
    print(
        f"wrote {out}: {n} model{'s' if n > 1 else ''}, {cost['params']:,} parameters, "
        f"{cost['gflop_per_window']:.3f} GFLOP per window; labels: {', '.join(clf.labels)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
