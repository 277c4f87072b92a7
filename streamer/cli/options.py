"""What every streamer command shares: exit codes, clear errors, SIGTERM as Ctrl-C, the runtime options.

``add_runtime_options`` adds --model, --hop-s, --backend, --device, --no-vad, --vad, --threads,
--max-batch and --max-wait-ms; their defaults are ``RuntimeConfig``'s. ``build_runtime`` turns them
into a ``Runtime`` (not started), ``load_model`` into a classifier; both exit with one clear line
(``CliExit``) instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.streamer.core.vad import VAD_METHODS, VadConfig
from emostream.streamer.runtime.config import RuntimeConfig

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier
    from emostream.streamer.runtime.runtime import Runtime

DEMO_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo.flac"
EXIT_OK, EXIT_ERROR, EXIT_NO_DEVICE = 0, 1, 2
MIC_BLOCK_MS = 20
FILE_BLOCK_MS = 20
_DEFAULTS = RuntimeConfig()


class CliExit(SystemExit):
    """A clear error already printed to stderr; exits with ``code`` without a traceback if uncaught."""


def error(prog: str, message: str, code: int = EXIT_ERROR) -> CliExit:
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
        metavar="PATH|default|fast",
        help="model directory, .onnx, .ts or checkpoint .pt, or a shipped model: 'default' (models/default: "
        "the deep model + the clip_stats statistics, the best on audio from elsewhere) or 'fast' (models/fast: "
        "the deep model alone, without the pitch rows: about 1.8x the streams per server); feature settings "
        "and labels come from the model file",
    )
    g.add_argument(
        "--hop-s",
        type=float,
        default=_DEFAULTS.hop_s,
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
        choices=VAD_METHODS,
        default=_DEFAULTS.vad.method,
        help="speech detector: silero (a neural VAD, run on one 32-ms chunk in --vad-stride) or energy "
        "(a level gate). CPU per stream per second of audio, per stride and streams: "
        "`python -m benchmarks --only vad`. Default %(default)s",
    )
    g.add_argument(
        "--vad-stride",
        type=int,
        default=_DEFAULTS.vad.silero_stride_chunks,
        metavar="N",
        help="silero runs on one 32-ms chunk in N (1: every chunk; its cost falls about N-fold; how often "
        "its decisions agree with N=1: `python -m benchmarks --only vad`). Default %(default)s",
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
        help=f"most windows (of all streams) per model call (default {_DEFAULTS.batching.max_batch} on the "
        f"CPU, where larger batches run no faster per window, {CUDA_MAX_BATCH} on CUDA)",
    )
    g.add_argument(
        "--no-pipeline",
        action="store_true",
        help="run VAD, log-mel, model and publication on one worker thread (default: two threads, "
        "the model of one batch beside the VAD and log-mel of the next; `python -m benchmarks` "
        "measures the difference with --serve-args=--no-pipeline)",
    )
    g.add_argument(
        "--max-wait-ms",
        type=float,
        default=_DEFAULTS.batching.max_wait_ms,
        metavar="MS",
        help="longest a window waits for others to batch with (default %(default)s). Adaptive: a window "
        "waits only when more are expected meanwhile, so a single stream never waits",
    )


CUDA_MAX_BATCH = 64  # on CUDA larger batches do pay; on the CPU the default is BatchConfig's


def runtime_config(args: argparse.Namespace, max_streams: int = 256) -> RuntimeConfig:
    """The ``RuntimeConfig`` of the runtime options; ``ValueError`` on a bad setting.

    Every default is ``RuntimeConfig``'s own (the options only override), except ``max_batch``
    on CUDA.
    """
    defaults = RuntimeConfig()
    max_batch = args.max_batch
    if max_batch is None:
        max_batch = CUDA_MAX_BATCH if args.compute_device == "cuda" else defaults.batching.max_batch
    batching = dataclasses.replace(defaults.batching, max_batch=max_batch, max_wait_ms=args.max_wait_ms)
    return RuntimeConfig(
        hop_s=args.hop_s,
        batching=batching,
        vad=VadConfig(enabled=not args.no_vad, method=args.vad, silero_stride_chunks=args.vad_stride),
        max_streams=max_streams,
        pipeline=not getattr(args, "no_pipeline", False),
    )


def load_model(args: argparse.Namespace, prog: str = "emostream") -> Classifier:
    """The classifier ``--model`` names; a clear message and ``CliExit(1)`` when it cannot be loaded."""
    from emostream.models.modelfile import ModelFileError, load_classifier, missing_shipped_model

    missing = missing_shipped_model(args.model)
    if missing is not None:
        raise error(
            prog,
            f"no {args.model} model: {missing} is missing. Train and export one "
            f"(`emostream train ...`, then `emostream export --checkpoint CKPT --out {missing}`), "
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
        raise error(prog, f"cannot load the model: {exc}") from None
    except (ValueError, RuntimeError, OSError) as exc:
        raise error(prog, f"cannot load the model {args.model}: {exc}") from None


def build_runtime(args: argparse.Namespace, max_streams: int = 256, prog: str = "emostream") -> Runtime:
    """A ``Runtime`` (not started) from the runtime options; ``CliExit(1)`` with a message on bad settings."""
    from emostream.streamer.runtime.runtime import Runtime  # here: `emostream --help` need not import torch

    try:
        config = runtime_config(args, max_streams)
    except ValueError as exc:
        raise error(prog, str(exc)) from None
    classifier = load_model(args, prog)
    try:
        return Runtime(classifier, config)
    except ValueError as exc:
        raise error(prog, str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
