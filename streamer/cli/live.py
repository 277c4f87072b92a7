"""`emostream live`: a microphone through the runtime to the dashboard or JSON lines (and optionally /feed)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emostream.streamer.cli.options import (
    EXIT_ERROR,
    EXIT_NO_DEVICE,
    EXIT_OK,
    MIC_BLOCK_MS,
    add_runtime_options,
    build_runtime,
    error,
    stops_on_sigterm,
)
from emostream.streamer.cli.output import open_output

if TYPE_CHECKING:
    from emostream.streamer.runtime.runtime import Runtime


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
    from emostream.streamer.sources import mic

    if args.list_devices:
        try:
            devices = mic.list_input_devices()
        except mic.NoInputDeviceError as exc:
            raise error(prog, str(exc), EXIT_NO_DEVICE) from None
        if not devices:
            raise error(prog, f"no audio input devices were found. {mic.HINT}", EXIT_NO_DEVICE)
        print("Input devices:")
        for d in devices:
            print(d.describe())
        return EXIT_OK
    try:
        device = mic.resolve_device(args.input_device)
    except mic.NoInputDeviceError as exc:
        raise error(prog, str(exc), EXIT_NO_DEVICE) from None
    runtime = build_runtime(args, max_streams=64, prog=prog)
    stop_feed = _start_feed(runtime, args.ws_port, prog) if args.ws_port is not None else None
    output = open_output(args, runtime, f"microphone {device.name}", prog)
    runtime.start()
    handle = runtime.open_stream("mic", device.default_samplerate_hz, 1, on_error=output.error)

    def on_audio(block: Any, n_lost: int) -> None:
        if n_lost:
            handle.note_dropped(n_lost)
        handle.push(block)
        output.level("mic", block)

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
        output.open()
        while True:
            time.sleep(0.25)
            source.check()
    except KeyboardInterrupt:
        pass
    except mic.MicError as exc:
        output.close()
        what = str(exc).split(" Call reopen()")[0].split(f" {mic.HINT}")[0]
        print(
            f"{prog}: the microphone stopped: {what}\nCheck the device and start `emostream live` again. "
            f"{mic.HINT}",
            file=sys.stderr,
            flush=True,
        )
        code = EXIT_ERROR
    except ValueError as exc:  # a block size the device rate cannot divide
        output.close()
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        code = EXIT_ERROR
    finally:
        if source is not None:
            source.stop()
        handle.flush(timeout_s=5.0)
        runtime.stop()
        if stop_feed is not None:
            stop_feed()
        output.close()
    return code


def _start_feed(runtime: Runtime, port: int, prog: str) -> Callable[[], None] | None:
    """Serve the runtime's estimates on ws://127.0.0.1:PORT/feed from a background thread (lazy import)."""
    try:
        import asyncio

        from emostream.streamer.server.access import Access
        from emostream.streamer.server.app import EmoServer
        from emostream.streamer.server.limits import ServerLimits
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
