"""`emostream demo`: a sound file (default: the bundled clip) paced in real time through the live pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emostream.streamer.cli.options import (
    DEMO_CLIP,
    EXIT_ERROR,
    EXIT_OK,
    FILE_BLOCK_MS,
    add_runtime_options,
    build_runtime,
    error,
    positive_float,
    stops_on_sigterm,
)
from emostream.streamer.cli.output import open_output


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="play a clip (default: the bundled demo) in real time through the live pipeline and dashboard",
        description="Stream a sound file through exactly the pipeline `emostream live` uses, paced in real time, "
        "and show the dashboard. Without FILE it plays the bundled clip of synthetic (espeak-ng) speech in "
        "four moods: no microphone needed.",
    )
    p.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=None,
        metavar="FILE",
        help="any sound file libsndfile reads (WAV, FLAC, OGG, MP3; mono or stereo; any rate); default "
        "the bundled streamer/assets/demo.flac",
    )
    p.add_argument(
        "--json", action="store_true", help="print estimates as JSON lines instead of the dashboard"
    )
    p.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        metavar="X",
        help="play X times faster than real time (default 1)",
    )
    add_runtime_options(p)
    p.set_defaults(func=run_demo)


@stops_on_sigterm
def run_demo(args: argparse.Namespace) -> int:
    prog = "emostream demo"
    from emostream.streamer.sources.file import FileSource, SourceError, stream_file

    path = args.file if args.file is not None else DEMO_CLIP
    try:
        source = FileSource(path, block_ms=FILE_BLOCK_MS, realtime=True, speed=args.speed)
    except SourceError as exc:
        raise error(prog, str(exc)) from None
    runtime = build_runtime(args, max_streams=1, prog=prog)
    output = open_output(args, runtime, path.name, prog)
    code = EXIT_OK
    with runtime:
        output.open()
        try:
            stream_file(runtime, source, path.name, on_block=output.level, on_error=output.error)
            output.status(f"finished: {source.duration_s:.1f} s of {path.name}")
        except SourceError as exc:
            output.close()
            print(f"{prog}: {exc}", file=sys.stderr, flush=True)
            code = EXIT_ERROR
        except KeyboardInterrupt:
            pass
        finally:
            output.close()
    return code
