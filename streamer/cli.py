"""The streamer's subcommands of ``emostream``: live (microphone), demo (bundled clip), replay (a file), serve.

Each ``register_*`` adds one subparser (entry points ``emostream.commands`` in pyproject.toml); each
command returns its exit code: 0 ok, 1 a bad file / model / runtime error (one clear line, no
traceback), 2 no usable input device. ``add_runtime_options`` and ``build_runtime`` are shared
with ``streamer.server`` (``emostream serve``).
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo.flac"
EXIT_OK, EXIT_ERROR, EXIT_NO_DEVICE = 0, 1, 2
MIC_BLOCK_MS = 20
FILE_BLOCK_MS = 20


class CliExit(SystemExit):
    """A clear error already printed to stderr; exits with ``code`` without a traceback if uncaught."""


def _error(prog: str, message: str, code: int = EXIT_ERROR) -> CliExit:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return CliExit(code)


def stops_on_sigterm(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with SIGTERM raising ``KeyboardInterrupt``, as Ctrl-C does.

    So ``kill`` (or a service manager) stops a command the way Ctrl-C does: the audio source
    stops, the windows already heard are published, the JSON-lines output is flushed and closed,
    exit code 0. The previous handler comes back afterwards (in-process callers, tests).
    """

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        if threading.current_thread() is not threading.main_thread():
            return command(args)

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            return command(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run


# ---- options and runtime shared by every command --------------------------------------------------


def add_runtime_options(p: argparse.ArgumentParser, compute_device_flag: str = "--device") -> None:
    """--model, --hop-s, --backend, --device (cpu|cuda), --no-vad, --vad, --threads."""
    g = p.add_argument_group("model and pipeline")
    g.add_argument(
        "--model",
        default="default",
        metavar="PATH|default",
        help="model directory, .onnx, .ts or checkpoint .pt; 'default' is the shipped model in "
        "models/default (its feature settings and labels come from the model file)",
    )
    g.add_argument(
        "--hop-s",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between estimates (default %(default)s; a multiple of the model's 10 ms frame hop)",
    )
    g.add_argument(
        "--backend",
        choices=("auto", "onnx", "torchscript", "eager"),
        default="auto",
        help="inference backend (default auto: ONNX Runtime when available)",
    )
    g.add_argument(
        compute_device_flag,
        dest="compute_device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the model runs (default cpu)",
    )
    g.add_argument(
        "--no-vad",
        action="store_true",
        help="classify every window, speech or not (default: windows without speech are reported "
        "with speech=false and not classified)",
    )
    g.add_argument(
        "--vad",
        choices=("silero", "energy"),
        default="silero",
        help="speech detector: silero (accurate, ~3-10 ms CPU per stream per 1 s hop) or energy "
        "(a level gate, ~0.1 ms; for hundreds of streams on a small CPU). Default silero",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads for the model and the feature extractor (default 1: streaming runs many "
        "small operations, where more threads only add synchronisation; measured in the README)",
    )
    g.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="most windows (of all streams) per model call (default 16 on the CPU, where larger batches "
        "run no faster per window, 64 on CUDA)",
    )
    g.add_argument(
        "--max-wait-ms",
        type=float,
        default=20.0,
        metavar="MS",
        help="longest a window waits for others to batch with (default %(default)s). Adaptive: a window "
        "waits only when more are expected meanwhile, so a single stream never waits",
    )


CPU_MAX_BATCH, CUDA_MAX_BATCH = 16, 64


def runtime_config(args: argparse.Namespace, max_streams: int = 256) -> Any:
    """The ``RuntimeConfig`` of the runtime options; ``ValueError`` on a bad setting."""
    from streamer.engine import EngineConfig
    from streamer.pipeline import RuntimeConfig
    from streamer.vad import VadConfig

    max_batch = args.max_batch
    if max_batch is None:
        max_batch = CUDA_MAX_BATCH if args.compute_device == "cuda" else CPU_MAX_BATCH
    engine = EngineConfig(max_batch=max_batch, max_wait_ms=args.max_wait_ms, adaptive=True)
    return RuntimeConfig(
        hop_s=args.hop_s,
        engine=engine,
        vad=VadConfig(enabled=not args.no_vad, method=args.vad),
        max_streams=max_streams,
    )


def load_model(args: argparse.Namespace, prog: str = "emostream") -> Any:
    """The classifier ``--model`` names; a clear message and ``CliExit(1)`` when it cannot be loaded."""
    from models.modelfile import DEFAULT_MODEL_DIR, ModelFileError, load_classifier

    if args.model == "default" and (not DEFAULT_MODEL_DIR.is_dir() or not any(DEFAULT_MODEL_DIR.iterdir())):
        raise _error(
            prog,
            f"no default model: {DEFAULT_MODEL_DIR} is missing. Train and export one "
            "(`emostream train ...`, then `emostream export --checkpoint CKPT --out models/default`), "
            "or pass --model PATH to a model directory, .onnx, .ts or .pt file.",
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the incremental log-mel runs torch ops on the worker thread
    try:
        return load_classifier(
            args.model, backend=args.backend, device=args.compute_device, threads=args.threads
        )
    except ModelFileError as exc:
        raise _error(prog, f"cannot load the model: {exc}") from None
    except (ValueError, RuntimeError, OSError) as exc:
        raise _error(prog, f"cannot load the model {args.model}: {exc}") from None


def build_runtime(args: argparse.Namespace, max_streams: int = 256, prog: str = "emostream") -> Any:
    """A ``Runtime`` (not started) from the runtime options; ``CliExit(1)`` with a message on bad settings."""
    from streamer.pipeline import Runtime

    try:
        config = runtime_config(args, max_streams)
    except ValueError as exc:
        raise _error(prog, str(exc)) from None
    classifier = load_model(args, prog)
    try:
        return Runtime(classifier, config)
    except ValueError as exc:
        raise _error(prog, str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _sink(args: argparse.Namespace, runtime: Any, source: str, out: TextIO | None = None) -> Any:
    """JSON lines on stdout with ``--json``, else the dashboard."""
    if getattr(args, "json", False):
        from streamer.jsonl import JsonLinesSink

        return JsonLinesSink(out)
    from streamer.dashboard import Dashboard

    return Dashboard(
        runtime.labels, runtime.model_name, source, runtime.sample_rate_hz, runtime.window_s, runtime.hop_s
    )


def _open(sink: Any) -> None:
    if hasattr(sink, "start"):
        sink.start()


def _close(sink: Any) -> None:
    if hasattr(sink, "stop"):
        sink.stop()
    elif hasattr(sink, "close"):
        sink.close()


def _report_errors(prog: str, sink: Any) -> Callable[[Any], None]:
    def on_error(event: Any) -> None:
        if hasattr(sink, "set_status"):
            sink.set_status(f"{event.code}: {event.message}")
        else:
            print(f"{prog}: {event.code}: {event.message}", file=sys.stderr, flush=True)

    return on_error


# ---- live ---------------------------------------------------------------------------------------------


def register_live(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live",
        help="live emotion meter from a microphone (terminal dashboard, JSON lines, WebSocket feed)",
        description="Listen to a microphone and show the speaker's emotion as it changes: the current label and "
        "confidence, a bar per class, a timeline, input level, latency and dropped audio. Estimates come "
        "every --hop-s seconds over the model's window. Without a microphone, try `emostream demo`.",
        epilog="Examples: emostream live | emostream live --list-devices | emostream live --device 'USB' --json | "
        "emostream live --ws-port 8765 (subscribe on ws://127.0.0.1:8765/feed)",
    )
    p.add_argument(
        "--device",
        dest="input_device",
        default=None,
        metavar="INDEX|NAME",
        help="input device: index or part of the name from --list-devices (default: the system's "
        "default input)",
    )
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument(
        "--json", action="store_true", help="print estimates as JSON lines on stdout instead of the dashboard"
    )
    p.add_argument(
        "--ws-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve the estimates on ws://127.0.0.1:P/feed (the `emostream serve` protocol)",
    )
    p.add_argument(
        "--block-ms", type=int, default=MIC_BLOCK_MS, help="audio block length (default %(default)s ms)"
    )
    add_runtime_options(p, compute_device_flag="--compute-device")
    p.set_defaults(func=run_live)


@stops_on_sigterm
def run_live(args: argparse.Namespace) -> int:
    prog = "emostream live"
    from streamer import mic

    if args.list_devices:
        try:
            devices = mic.list_input_devices()
        except mic.NoInputDeviceError as exc:
            raise _error(prog, str(exc), EXIT_NO_DEVICE) from None
        if not devices:
            raise _error(prog, f"no audio input devices were found. {mic.HINT}", EXIT_NO_DEVICE)
        print("Input devices:")
        for d in devices:
            print(d.describe())
        return EXIT_OK
    try:
        device = mic.resolve_device(args.input_device)
    except mic.NoInputDeviceError as exc:
        raise _error(prog, str(exc), EXIT_NO_DEVICE) from None
    runtime = build_runtime(args, max_streams=64, prog=prog)
    sink = _sink(args, runtime, f"microphone {device.name}")
    stop_feed = _start_feed(runtime, args.ws_port, prog) if args.ws_port is not None else None
    runtime.add_sink(sink)
    runtime.start()
    handle = runtime.open_stream("mic", device.default_samplerate_hz, 1, on_error=_report_errors(prog, sink))
    level = getattr(sink, "note_level", None)

    def on_audio(block: Any, n_lost: int) -> None:
        if n_lost:
            handle.note_dropped(n_lost)
        handle.push(block)
        if level is not None:
            level("mic", block)

    code = EXIT_OK
    source = None
    try:
        source = mic.MicSource(
            device,
            sample_rate_hz=device.default_samplerate_hz,
            block_ms=args.block_ms,
            on_audio=on_audio,
            channels=1,
        )
        source.start()
        _open(sink)
        while True:
            time.sleep(0.25)
            source.check()
    except KeyboardInterrupt:
        pass
    except mic.MicError as exc:
        _close(sink)
        what = str(exc).split(" Call reopen()")[0].split(f" {mic.HINT}")[0]
        print(
            f"{prog}: the microphone stopped: {what}\nCheck the device and start `emostream live` again. "
            f"{mic.HINT}",
            file=sys.stderr,
            flush=True,
        )
        code = EXIT_ERROR
    except ValueError as exc:  # a block size the device rate cannot divide
        _close(sink)
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        code = EXIT_ERROR
    finally:
        if source is not None:
            source.stop()
        handle.flush(timeout_s=5.0)
        runtime.stop()
        if stop_feed is not None:
            stop_feed()
        _close(sink)
    return code


def _start_feed(runtime: Any, port: int, prog: str) -> Callable[[], None] | None:
    """Serve the runtime's estimates on ws://127.0.0.1:PORT/feed from a background thread (lazy import)."""
    try:
        import asyncio

        from streamer.limits import ServerLimits
        from streamer.server import Access, EmoServer
    except ImportError as exc:
        print(
            f"{prog}: --ws-port: the WebSocket server is not available ({exc}); going on without it",
            file=sys.stderr,
            flush=True,
        )
        return None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []
    ready = threading.Event()

    def listening(host: str, bound: int) -> None:
        print(f"{prog}: estimates on ws://{host}:{bound}/feed", file=sys.stderr, flush=True)
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                EmoServer(runtime, ServerLimits(), Access()).run("127.0.0.1", port, stop, listening)
            )
        except Exception as exc:
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=serve, name="emostream-feed", daemon=True)
    thread.start()
    ready.wait(10)
    if failed:
        print(
            f"{prog}: --ws-port {port}: cannot serve: {failed[0]}; going on without it",
            file=sys.stderr,
            flush=True,
        )
        return None

    def stop_feed() -> None:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)

    return stop_feed


# ---- demo and replay: files ---------------------------------------------------------------------


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
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="play X times faster than real time (default 1)",
    )
    add_runtime_options(p)
    p.set_defaults(func=run_demo)


@stops_on_sigterm
def run_demo(args: argparse.Namespace) -> int:
    prog = "emostream demo"
    from streamer.filesource import FileSource, SourceError

    path = args.file if args.file is not None else DEMO_CLIP
    try:
        source = FileSource(path, block_ms=FILE_BLOCK_MS, realtime=True, speed=args.speed)
    except SourceError as exc:
        raise _error(prog, str(exc)) from None
    runtime = build_runtime(args, max_streams=1, prog=prog)
    sink = _sink(args, runtime, path.name)
    runtime.add_sink(sink)
    level = getattr(sink, "note_level", None)
    code = EXIT_OK
    with runtime:
        handle = runtime.open_stream(
            path.name, source.sample_rate_hz, source.channels, on_error=_report_errors(prog, sink)
        )
        _open(sink)
        try:
            for block, arrival_s in source.blocks():
                handle.push(block, arrival_time=arrival_s)
                if level is not None:
                    level(path.name, block)
            handle.flush(timeout_s=60.0)
            if hasattr(sink, "set_status"):
                sink.set_status(f"finished: {source.duration_s:.1f} s of {path.name}")
        except SourceError as exc:
            _close(sink)
            print(f"{prog}: {exc}", file=sys.stderr, flush=True)
            code = EXIT_ERROR
        except KeyboardInterrupt:
            pass
        finally:
            _close(sink)
    return code


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
        "--speed", type=_positive_float, default=1.0, metavar="X", help="with --realtime: X times real time"
    )
    add_runtime_options(p)
    p.set_defaults(func=run_replay)


@stops_on_sigterm
def run_replay(args: argparse.Namespace) -> int:
    prog = "emostream replay"
    from streamer.filesource import FileSource, SourceError
    from streamer.jsonl import JsonLinesSink
    from streamer.pipeline import replay_file

    try:
        source = FileSource(args.file)
    except SourceError as exc:
        raise _error(prog, str(exc)) from None
    runtime = build_runtime(args, max_streams=1, prog=prog)  # validates the model and settings
    try:
        sink = JsonLinesSink(args.jsonl)
    except OSError as exc:
        raise _error(prog, f"cannot write {args.jsonl}: {exc}") from None
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
        raise _error(prog, str(exc)) from None
    except RuntimeError as exc:
        raise _error(prog, f"{args.file}: {exc}") from None
    finally:
        sink.close()
    wall_s = time.perf_counter() - started
    summary = ", ".join(f"{label} {n}" for label, n in labels.most_common()) or "none"
    print(
        f"{prog}: {args.file}: {source.duration_s:.1f} s of audio ({source.sample_rate_hz} Hz, {source.channels} ch) "
        f"-> {n_windows} windows ({n_speech} with speech) in {wall_s:.2f} s "
        f"({source.duration_s / max(wall_s, 1e-9):.0f}x real time); labels: {summary}"
        f"{'; stopped by a signal before the end' if interrupted else ''}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK


# ---- serve (implemented in streamer.server) ----------------------------------------------------------------


def register_serve(sub: argparse._SubParsersAction) -> None:
    try:
        from streamer import server
    except ImportError as exc:
        reason = str(exc)
        p = sub.add_parser(
            "serve",
            help="WebSocket server (not available in this installation)",
            description="The WebSocket server (streamer.server) is not available.",
        )
        p.set_defaults(func=lambda args: _unavailable(reason))
        return
    server.add_serve_parser(sub)


def _unavailable(reason: str) -> int:
    print(
        f"emostream serve: not yet available: the WebSocket server module cannot be imported ({reason})",
        file=sys.stderr,
    )
    return EXIT_ERROR
