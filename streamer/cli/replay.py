"""`emostream replay`: a sound file through the streaming pipeline as fast as possible, estimates as JSON lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from emostream.streamer.cli.options import (
    EXIT_OK,
    FILE_BLOCK_MS,
    add_runtime_options,
    build_runtime,
    error,
    positive_float,
    stops_on_sigterm,
)


def register_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="run a sound file through the streaming pipeline as fast as possible; estimates as JSON lines",
        description="Replay FILE through the same streaming pipeline (resampling, windows, VAD, smoothing) as fast "
        "as the CPU allows, or paced with --realtime, and write one JSON estimate per window to OUT or stdout. "
        "A summary goes to stderr. The raw probabilities equal offline inference on the same audio.",
    )
    p.add_argument(
        "file", type=Path, metavar="FILE", help="any sound file libsndfile reads (any rate, mono or stereo)"
    )
    p.add_argument(
        "--jsonl", type=Path, default=None, metavar="OUT", help="write the JSON lines here (default stdout)"
    )
    p.add_argument(
        "--realtime", action="store_true", help="pace the file in real time (default: as fast as possible)"
    )
    p.add_argument(
        "--speed", type=positive_float, default=1.0, metavar="X", help="with --realtime: X times real time"
    )
    add_runtime_options(p)
    p.set_defaults(func=run_replay)


@stops_on_sigterm
def run_replay(args: argparse.Namespace) -> int:
    prog = "emostream replay"
    from emostream.streamer.sinks.jsonl import JsonLinesSink
    from emostream.streamer.sources.file import FileSource, SourceError, replay_file

    try:
        source = FileSource(args.file)
    except SourceError as exc:
        raise error(prog, str(exc)) from None
    runtime = build_runtime(args, max_streams=1, prog=prog)  # validates the model and settings
    try:
        sink = JsonLinesSink(args.jsonl)
    except OSError as exc:
        raise error(prog, f"cannot write {args.jsonl}: {exc}") from None
    labels: Counter[str] = Counter()
    n_windows = n_speech = 0
    interrupted = False
    started = time.perf_counter()
    try:
        for event in replay_file(
            args.file,
            runtime.classifier,
            runtime.config,
            realtime=args.realtime,
            speed=args.speed,
            block_ms=FILE_BLOCK_MS,
        ):
            sink.publish(event)
            n_windows += 1
            if event.speech and event.label is not None:
                n_speech += 1
                labels[event.label] += 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was written stays, whole lines, flushed
        interrupted = True
    except SourceError as exc:
        raise error(prog, str(exc)) from None
    except RuntimeError as exc:
        raise error(prog, f"{args.file}: {exc}") from None
    finally:
        sink.close()
    wall_s = time.perf_counter() - started
    summary = ", ".join(f"{label} {n}" for label, n in labels.most_common()) or "none"
    print(
        f"{prog}: {args.file}: {source.duration_s:.1f} s of audio ({source.sample_rate_hz} Hz, {source.channels} ch) "
        f"-> {n_windows} windows ({f'{n_speech} with speech' if runtime.speech_gated else 'no speech gate'}) "
        f"in {wall_s:.2f} s "
        f"({source.duration_s / max(wall_s, 1e-9):.0f}x real time); labels: {summary}"
        f"{'; stopped by a signal before the end' if interrupted else ''}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK
