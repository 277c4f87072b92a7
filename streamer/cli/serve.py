"""`emostream serve`: the WebSocket server's command line (options, event loop, signals, start and stop).

The server itself is ``streamer.server.app.EmoServer``; every ``--limit-*`` option is a field of
``streamer.server.limits.ServerLimits``, its help text the field's metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from emostream.streamer.cli.options import add_runtime_options, build_runtime
from emostream.streamer.cli.workers import EXIT_BROKER, Supervisor, add_cluster_options, resolve_workers
from emostream.streamer.server.access import TOKEN_ENV, Access, exposure_warning
from emostream.streamer.server.app import DEFAULT_HOST, DEFAULT_PORT, LISTENING_LINE, PATHS, EmoServer
from emostream.streamer.server.brokerconf import BrokerUnavailableError
from emostream.streamer.server.limits import ServerLimits
from emostream.streamer.server.ops import Ops

log = logging.getLogger("emostream.server")

DEFAULT_GIL_SWITCH_MS = 0.5  # vs Python's 5: python -m benchmarks --only ours --serve-args "--gil-switch-ms 5"


def _limit_option(name: str) -> str:
    return "--limit-" + name.replace("_", "-")


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """One ``--limit-NAME`` option per ``ServerLimits`` field, defaulting to the field's default."""
    group = parser.add_argument_group("limits (see docs/protocol.md)")
    for f in dataclasses.fields(ServerLimits):
        default = f.default
        group.add_argument(
            _limit_option(f.name),
            dest="limit_" + f.name,
            type=type(default),
            default=default,
            metavar="N" if isinstance(default, int) else "X",
            help=f"{f.metadata['help']} (default {default})",
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        **{f.name: getattr(args, "limit_" + f.name) for f in dataclasses.fields(ServerLimits)}
    )


def register_serve(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``emostream serve`` subcommand (entry point ``emostream.commands``)."""
    p = subparsers.add_parser(
        "serve",
        help="WebSocket server: stream audio in on /ingest, get estimates back; subscribe on /feed",
        description="Serve the emotion recognizer over WebSocket. Clients send a JSON start message and binary "
        "PCM frames to ws://HOST:PORT/ingest and get estimates of their stream back; subscribers on "
        "ws://HOST:PORT/feed[?stream=ID] get the estimates of every stream (or one). A browser opening "
        "http://HOST:PORT/ gets the live meter (its microphone -> /ingest; /wall shows every stream; "
        "?autostart=1 starts at once, ?token=T passes the token). Protocol, error codes "
        "and limits: docs/protocol.md.",
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s: this machine only)"
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0: any free port)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' or '?token=TOKEN' (default: ${TOKEN_ENV}, else none)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser Origin allowed to connect, e.g. https://app.example (repeatable; requests with any other "
        "Origin header get 403, except this server's own page at http://127.0.0.1:PORT, http://localhost:PORT "
        "or http://[::1]:PORT; clients without an Origin header are not browsers and are allowed)",
    )
    tuning = p.add_argument_group("server tuning (compare settings: python -m benchmarks --serve-args \"...\")")
    tuning.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="asyncio event loop: uvloop (libuv, less CPU per message) or the standard one; "
        "default auto: uvloop when it is installed",
    )
    tuning.add_argument(
        "--gil-switch-ms",
        type=float,
        default=DEFAULT_GIL_SWITCH_MS,
        metavar="MS",
        help="Python's thread switch interval in this process (default %(default)s; Python's own is 5). "
        "The network thread runs Python without pause under load; a short interval hands the interpreter "
        "lock back to the model thread sooner after each of its native calls (to compare: "
        "python -m benchmarks --only ours --vad none --serve-args \"--gil-switch-ms 5\")",
    )
    add_cluster_options(p)
    add_limit_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run_serve)
    return p


def loop_runner(event_loop: str = "auto") -> Callable[[Coroutine[Any, Any, None]], None]:
    """``uvloop.run`` or ``asyncio.run`` as asked (``auto``: uvloop when installed); ValueError if unavailable."""
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {event_loop!r}")
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ValueError(
                    "--event-loop uvloop: uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.run
    return asyncio.run


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # its debug lines would show ?token=
    try:
        limits = limits_from_args(args)
        run_loop = loop_runner(args.event_loop)
        if not (0 < args.gil_switch_ms < 1000):
            raise ValueError(f"--gil-switch-ms must be between 0 and 1000, got {args.gil_switch_ms:g}")
        n_workers = resolve_workers(args.workers)
        if args.broker:
            from emostream.streamer.server.brokerconf import check_broker_url

            check_broker_url(args.broker)
    except ValueError as exc:
        print(f"emostream serve: {exc}", file=sys.stderr)
        return 2
    token = args.token or None
    if (warning := exposure_warning(args.host, token)) is not None:
        log.warning(warning)
    worker = getattr(args, "worker", None)  # set in a worker process of --workers N (streamer.cli.workers)
    if n_workers > 1 and worker is None:
        return Supervisor(args, n_workers, stop_timeout_s=limits.close_timeout_s + 25).run()
    runtime = build_runtime(args, max_streams=limits.max_streams, prog="emostream serve")
    sys.setswitchinterval(args.gil_switch_ms / 1000.0)
    broker = None
    if args.broker:
        from emostream.streamer.server.broker import Broker
        from emostream.streamer.server.brokerconf import BrokerConfig

        broker = Broker(BrokerConfig(args.broker))
    server = EmoServer(runtime, limits, Access(token, tuple(args.allow_origin)), broker)
    ops = Ops(server, worker.info if worker is not None else None)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def listening(host: str, port: int) -> None:
            ops.ready = True
            if worker is None:
                print(LISTENING_LINE.format(host=host, port=port), file=sys.stderr, flush=True)
            else:  # the parent prints the listening line once every worker listens
                worker.announce(port)
            log.info(
                "model %s, window %.2f s, hop %.2f s; auth %s; paths %s",
                runtime.model_name,
                runtime.window_s,
                runtime.hop_s,
                "token" if token else "none",
                ", ".join(PATHS),
            )

        poller = asyncio.create_task(ops.poll())
        try:
            await server.run(args.host, args.port, stop, listening, reuse_port=worker is not None)
        finally:
            poller.cancel()

    runtime.start()
    try:
        run_loop(main())
    except BrokerUnavailableError as exc:
        print(f"emostream serve: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except OSError as exc:
        print(f"emostream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.stop()
    log.info("stopped")
    return 0
