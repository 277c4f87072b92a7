"""`emostream serve`: the WebSocket edge of the pipeline (/ingest audio in, estimates out; /feed).

One asyncio event loop owns every connection; the pipeline's engine runs in its own thread
and reaches the loop only through ``Hub`` (``call_soon_threadsafe``). Wire format and limits:
``streamer.protocol`` and ``streamer.limits``, documented in docs/protocol.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamer.events import ErrorEvent, Estimate, ReadyEvent
from streamer.hub import Hub, HubFullError, Outbox
from streamer.limits import ServerLimits, TokenBucket
from streamer.protocol import (
    CLOSE_NORMAL,
    STREAM_ID_PATTERN,
    EndMessage,
    ProtocolError,
    StartMessage,
    StopMessage,
    SubscribedMessage,
    ThrottledMessage,
    WindowErrorMessage,
    audio_frames,
    parse_control,
)

log = logging.getLogger("emostream.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "EMOSTREAM_TOKEN"
PATHS = ("/ingest", "/feed")
DEFAULT_GIL_SWITCH_MS = 0.5  # measured: 144 streams, p50 latency 1555 ms at Python's 5 ms, 148 ms at 0.5 ms
LISTENING_LINE = "emostream serve: listening on ws://{host}:{port}"  # tests and the soak wait for it


# ---- what the server needs of streamer.pipeline ----------------------------------------------------


class StreamHandleLike(Protocol):
    def push(self, samples: np.ndarray, arrival_time: float | None = None) -> Any: ...
    def flush(self) -> Any: ...
    def note_dropped(self, n_input_frames: int) -> None: ...


class RuntimeLike(Protocol):
    labels: Sequence[str]
    sample_rate_hz: int
    window_s: float
    hop_s: float
    model_name: str

    def add_sink(self, sink: Any) -> None: ...
    def remove_sink(self, sink: Any) -> None: ...
    def open_stream(
        self,
        stream_id: str,
        sample_rate_hz: int,
        channels: int,
        on_estimate: Callable[[Estimate], None] | None = None,
        on_error: Callable[[ErrorEvent], None] | None = None,
    ) -> StreamHandleLike: ...
    def close_stream(self, stream_id: str) -> Any: ...


# ---- HTTP handshake: path, Origin, token, connection count -----------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """Who may connect: the bearer token (None: anyone) and the browser Origins allowed."""

    token: str | None = None
    allow_origins: tuple[str, ...] = ()

    def token_ok(self, headers: Headers, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        offered = [v[7:].strip() for v in headers.get_all("Authorization") if v[:7].lower() == "bearer "]
        offered += query.get("token", [])
        ok = False
        for candidate in offered:  # compare every candidate in constant time, no early exit
            ok |= hmac.compare_digest(candidate.encode(), expected)
        return ok

    def origin_ok(self, headers: Headers) -> bool:
        origins = headers.get_all("Origin")
        if not origins:
            return True  # not a browser
        return len(origins) == 1 and origins[0] in self.allow_origins


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning logged when the server is reachable from other machines without a token."""
    if token is not None or is_loopback(host):
        return None
    return (
        f"serving on {host}, which is not a loopback address, WITHOUT a token: anyone who can reach this port "
        f"can stream audio and read every estimate. Set --token or ${TOKEN_ENV}."
    )


# ---- the server -------------------------------------------------------------------------------------


@dataclass
class ServerStats:
    connections: int = 0
    streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class EmoServer:
    """Routes WebSocket connections to ingest sessions and feed subscriptions over one runtime."""

    def __init__(self, runtime: RuntimeLike, limits: ServerLimits, access: Access) -> None:
        self.runtime = runtime
        self.limits = limits
        self.access = access
        self.reset()

    def reset(self) -> None:
        self.hub: Hub | None = None
        self.stats = ServerStats()
        self._stream_ids: set[str] = set()
        self._ids = itertools.count(1)

    # -- handshake --------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path not in PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, f"unknown path; use one of {', '.join(PATHS)}\n")
        if not self.access.origin_ok(request.headers):
            log.info(
                "rejected a browser connection from Origin %r (not allowed)", request.headers.get("Origin")
            )
            return connection.respond(HTTPStatus.FORBIDDEN, "Origin not allowed (see --allow-origin)\n")
        if not self.access.token_ok(request.headers, query):
            return _unauthorized(connection)
        stream = query.get("stream", [None])[-1]
        if url.path == "/feed" and stream is not None and not _valid_stream_id(stream, self.limits):
            return connection.respond(HTTPStatus.BAD_REQUEST, "bad ?stream= id\n")
        if self.stats.connections >= self.limits.max_connections:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
            response.headers["Retry-After"] = "5"
            return response
        return None

    # -- connections ------------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        self.stats.connections += 1
        _limit_kernel_send_buffer(ws, self.limits.write_buffer_bytes)
        try:
            if self.stats.connections > self.limits.max_connections:  # handshakes raced past the check
                raise ProtocolError(
                    "too_many_connections", f"the server allows {self.limits.max_connections}"
                )
            if url.path == "/ingest":
                await IngestSession(self, ws).run()
            else:
                await self._feed(ws, parse_qs(url.query).get("stream", [None])[-1])
        except ProtocolError as exc:
            await self.fail(ws, exc)
        except ConnectionClosed:
            pass  # the client went away; its session has cleaned up
        except Exception:
            log.exception("internal error on %s", url.path)
            await self.fail(ws, ProtocolError("internal", "internal server error"))
        finally:
            self.stats.connections -= 1

    async def fail(self, ws: ServerConnection, exc: ProtocolError, stream: str | None = None) -> None:
        """Send the error message, then close with its close code (quietly if the client is gone)."""
        self.stats.errors[exc.code] = self.stats.errors.get(exc.code, 0) + 1
        log.info("closing a connection: %s %s", exc.code, exc.message)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(ErrorEvent(exc.code, exc.message, stream).to_json())
        with contextlib.suppress(ConnectionClosed):
            await ws.close(exc.close_code, exc.code)

    async def _feed(self, ws: ServerConnection, stream: str | None) -> None:
        assert self.hub is not None
        try:
            outbox = self.hub.subscribe(stream)
        except HubFullError as exc:
            raise ProtocolError("too_many_subscribers", str(exc)) from None
        try:
            hello = SubscribedMessage(
                stream, tuple(self.runtime.labels), self.runtime.model_name, outbox.maxlen
            )
            await ws.send(hello.to_json())
            writer = asyncio.create_task(pump(outbox, ws))
            reader = asyncio.create_task(ws.recv())
            try:
                done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done and reader.exception() is None:
                    raise ProtocolError("unexpected_message", "subscribers (/feed) must not send messages")
                for task in done:
                    task.result()  # ConnectionClosed ends the subscription
            finally:
                for task in (writer, reader):
                    task.cancel()
                await asyncio.gather(writer, reader, return_exceptions=True)
        finally:
            self.hub.unsubscribe(outbox)

    # -- stream ids -------------------------------------------------------------------------------

    def claim_stream(self, wanted: str | None) -> str:
        if len(self._stream_ids) >= self.limits.max_streams:
            raise ProtocolError(
                "too_many_streams", f"the server has its maximum of {self.limits.max_streams} streams"
            )
        if wanted is None:
            wanted = f"s{next(self._ids)}-{secrets.token_hex(3)}"
        elif wanted in self._stream_ids:
            raise ProtocolError("stream_in_use", f"stream {wanted!r} is already being streamed")
        self._stream_ids.add(wanted)
        self.stats.streams = len(self._stream_ids)
        return wanted

    def release_stream(self, stream_id: str) -> None:
        self._stream_ids.discard(stream_id)
        self.stats.streams = len(self._stream_ids)

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(
        self,
        host: str,
        port: int,
        stop: asyncio.Event,
        on_listening: Callable[[str, int], None] | None = None,
    ) -> None:
        """Serve until ``stop`` is set; then close every connection with 1001 and return."""
        loop = asyncio.get_running_loop()
        self.hub = Hub(loop, self.limits.max_subscribers, self.limits.queue_messages)
        self.runtime.add_sink(self.hub)
        try:
            async with serve(
                self.handler,
                host,
                port,
                process_request=self.process_request,
                compression=None,  # audio does not compress; and no decompression bombs
                max_size=self.limits.hard_message_bytes,
                ping_interval=self.limits.ping_interval_s,
                ping_timeout=self.limits.ping_timeout_s,
                close_timeout=self.limits.close_timeout_s,
                write_limit=self.limits.write_buffer_bytes,
                server_header=None,
            ) as server:
                bound_port = _bound_port(server)
                if on_listening is not None:
                    on_listening(host, bound_port)
                await stop.wait()
                log.info("shutting down: closing %d connection(s) with 1001", self.stats.connections)
                server.close()  # code 1001 (going away) to every connection
                await server.wait_closed()
        finally:
            self.runtime.remove_sink(self.hub)
            self.hub.close()


def _limit_kernel_send_buffer(ws: ServerConnection, n_bytes: int) -> None:
    """Bound what a client that stops reading can hold in the kernel too (on top of websockets' write_limit)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, n_bytes)


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


def _unauthorized(connection: ServerConnection) -> Response:
    response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="emostream"'
    return response


def _valid_stream_id(stream: str, limits: ServerLimits) -> bool:
    return len(stream) <= limits.max_stream_id_chars and STREAM_ID_PATTERN.fullmatch(stream) is not None


async def pump(outbox: Outbox, ws: ServerConnection) -> None:
    """Send the outbox's messages in order until it is closed and empty."""
    while (message := await outbox.get()) is not None:
        await ws.send(message)


class IdleWatchdog:
    """The idle timeout of one connection: cancels its task once a ``recv`` has waited ``timeout_s``.

    One timer per connection, re-armed lazily when it fires early, instead of an ``asyncio.timeout``
    (a timer scheduled and cancelled) around every message: at 50 messages a second per stream
    that was a tenth of the event loop's time. Must be created inside the task it guards.
    """

    def __init__(self, timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self.waiting = False  # the task is awaiting a message now
        self.waiting_since = self.loop.time()
        self.fired = False
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(self.waiting_since + timeout_s, self._check)

    def _check(self) -> None:
        due = self.waiting_since + self.timeout_s
        now = self.loop.time()
        if not self.waiting or now < due:
            self._timer = self.loop.call_at(max(due, now + 0.05 * self.timeout_s), self._check)
            return
        self._timer = None
        self.fired = True
        if self._task is not None:
            self._task.cancel()

    def take_timeout(self) -> bool:
        """In the guarded task's ``except CancelledError``: True (and the cancel withdrawn) if it was ours."""
        if not self.fired or self._task is None:
            return False
        self.fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class IngestSession:
    """One /ingest connection: start -> audio... -> [stop], with estimates flowing back meanwhile."""

    def __init__(self, server: EmoServer, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.limits = server.limits
        self.reset()

    def reset(self) -> None:
        self.stream_id: str | None = None
        self.start: StartMessage | None = None
        self.received_frames = 0
        self.throttled_frames = 0
        self._throttled_unreported = 0
        self._last_report_s = -float("inf")
        self._closed = False  # the runtime's stream is closed
        self._watchdog: IdleWatchdog | None = None

    async def _recv(self) -> str | bytes:
        watchdog = self._watchdog
        if watchdog is None:
            watchdog = self._watchdog = IdleWatchdog(self.limits.idle_timeout_s)
        watchdog.waiting_since = watchdog.loop.time()
        watchdog.waiting = True
        try:
            message = await self.ws.recv()
        except asyncio.CancelledError:
            if watchdog.take_timeout():
                raise ProtocolError("idle_timeout", f"no message for {self.limits.idle_timeout_s:g} s") from None
            raise
        finally:
            watchdog.waiting = False
        if len(message) > self.limits.max_message_bytes:
            raise ProtocolError(
                "too_big",
                f"message of {len(message)} bytes exceeds the limit of {self.limits.max_message_bytes}",
            )
        return message

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._watchdog is not None:
                self._watchdog.close()

    async def _run(self) -> None:
        first = await self._recv()
        if isinstance(first, bytes):
            raise ProtocolError("no_start", 'send {"type":"start",...} before audio')
        control = parse_control(first, self.limits)
        if isinstance(control, StopMessage):
            raise ProtocolError("no_start", "stop before start")
        self.start = control
        from streamer.pipeline import StreamLimitError  # here: `emostream --help` need not import torch

        server, runtime = self.server, self.server.runtime
        assert server.hub is not None
        stream_id = server.claim_stream(control.stream)
        outbox = Outbox(self.limits.queue_messages)
        hub = server.hub
        try:
            try:
                handle = runtime.open_stream(
                    stream_id,
                    control.sample_rate_hz,
                    control.channels,
                    on_estimate=lambda event: hub.deliver(outbox, event),
                    on_error=lambda event: hub.deliver_text(outbox, WindowErrorMessage.of(event).to_json()),
                )
            except StreamLimitError as exc:
                raise ProtocolError("too_many_streams", str(exc)) from None
            except ValueError as exc:
                raise ProtocolError("bad_start", str(exc)) from None
            self.stream_id = stream_id
            try:
                await self._stream(handle, outbox)
            finally:
                outbox.close()
                if not self._closed:
                    await asyncio.to_thread(runtime.close_stream, stream_id)
        finally:
            server.release_stream(stream_id)

    async def _stream(self, handle: StreamHandleLike, outbox: Outbox) -> None:
        runtime, start, ws = self.server.runtime, self.start, self.ws
        assert start is not None and self.stream_id is not None
        ready = ReadyEvent(
            self.stream_id,
            tuple(runtime.labels),
            runtime.sample_rate_hz,
            runtime.model_name,
            runtime.window_s,
            runtime.hop_s,
        )
        await ws.send(_ready_json(ready, start, self.limits))
        loop = asyncio.get_running_loop()
        bucket = TokenBucket.for_stream(self.limits, start.sample_rate_hz, loop.time())
        writer = asyncio.create_task(pump(outbox, ws))
        try:
            while True:
                message = await self._recv()
                if isinstance(message, str):
                    try:
                        control = parse_control(message, self.limits)
                    except ProtocolError as exc:
                        raise ProtocolError(
                            "unexpected_text", f"expected audio or stop: {exc.message}"
                        ) from None
                    if isinstance(control, StartMessage):
                        raise ProtocolError("duplicate_start", "this connection has already started a stream")
                    break
                samples = audio_frames(message, start)
                n = int(samples.shape[0])
                self.received_frames += n
                allowed = bucket.take(n, loop.time())
                if allowed < n:
                    handle.note_dropped(n - allowed)  # counted in the estimates' dropped_samples too
                    self._throttle(n - allowed, loop.time(), outbox)
                if allowed:
                    handle.push(samples[:allowed])
            await self._finish(handle, outbox, writer)
        except ProtocolError as exc:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.server.fail(ws, exc, self.stream_id)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _throttle(self, n_dropped: int, now_s: float, outbox: Outbox) -> None:
        self.throttled_frames += n_dropped
        self._throttled_unreported += n_dropped
        if now_s - self._last_report_s >= self.limits.report_interval_s:
            assert self.stream_id is not None
            outbox.put(
                ThrottledMessage(
                    self.stream_id,
                    self._throttled_unreported,
                    self.throttled_frames,
                    self.limits.realtime_factor,
                    self.limits.burst_s,
                ).to_json()
            )
            self._throttled_unreported = 0
            self._last_report_s = now_s

    async def _finish(self, handle: StreamHandleLike, outbox: Outbox, writer: asyncio.Task[None]) -> None:
        """After stop: final window, its estimates, ``end``, close 1000."""
        assert self.stream_id is not None
        await asyncio.to_thread(handle.flush)
        await asyncio.to_thread(self.server.runtime.close_stream, self.stream_id)
        self._closed = True
        await asyncio.sleep(0)  # let estimate deliveries scheduled by the engine thread run
        end = EndMessage(
            self.stream_id,
            self.received_frames,
            self.throttled_frames,
            outbox.put_total,
            outbox.dropped_total,
        )
        outbox.put(end.to_json())
        outbox.close()
        async with asyncio.timeout(self.limits.idle_timeout_s):
            await writer
        await self.ws.close(CLOSE_NORMAL)


def _ready_json(ready: ReadyEvent, start: StartMessage, limits: ServerLimits) -> str:
    """ReadyEvent's fields (``sample_rate_hz``: the model's rate) plus the stream's own input format
    (``sample_rate``: the client's rate) and the limits that apply to it."""
    d = ready.to_dict()
    d.update(
        sample_rate=start.sample_rate_hz,
        encoding=start.encoding,
        channels=start.channels,
        max_message_bytes=limits.max_message_bytes,
        realtime_factor=limits.realtime_factor,
        burst_s=limits.burst_s,
    )
    return json.dumps(d, separators=(",", ":"))


# ---- command line --------------------------------------------------------------------------------------

LIMIT_HELP: dict[str, str] = {
    "max_message_bytes": "largest WebSocket message accepted; larger: error too_big, close 1009",
    "hard_message_bytes_factor": "websockets itself drops messages over this many times max-message-bytes",
    "max_control_chars": "longest JSON control message",
    "max_connections": "open connections of all kinds; more: HTTP 503",
    "max_streams": "concurrent ingest streams; more: close 1013",
    "max_subscribers": "concurrent /feed subscribers; more: close 1013",
    "queue_messages": "outgoing messages queued per connection; beyond it the oldest are dropped",
    "write_buffer_bytes": "bytes buffered per connection before sending waits for the client to read",
    "min_sample_rate_hz": "lowest input sample rate",
    "max_sample_rate_hz": "highest input sample rate",
    "max_channels": "most input channels",
    "max_stream_id_chars": "longest stream id",
    "realtime_factor": "sustained ingest rate allowed per stream, in x real time (excess dropped, reported)",
    "burst_s": "seconds of audio a stream may send at once beyond the sustained rate",
    "report_interval_s": "at most one 'throttled' message per stream per this many seconds",
    "idle_timeout_s": "close an ingest connection that sends nothing for this long",
    "ping_interval_s": "keepalive ping interval",
    "ping_timeout_s": "close a connection whose pong is this late",
    "close_timeout_s": "wait this long for the peer's close frame",
}


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
            help=f"{LIMIT_HELP.get(f.name, f.name)} (default {default})",
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        **{f.name: getattr(args, "limit_" + f.name) for f in dataclasses.fields(ServerLimits)}
    )


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``emostream serve`` subcommand (registered by ``streamer.cli.register_serve``)."""
    p = subparsers.add_parser(
        "serve",
        help="WebSocket server: stream audio in on /ingest, get estimates back; subscribe on /feed",
        description="Serve the emotion recognizer over WebSocket. Clients send a JSON start message and binary "
        "PCM frames to ws://HOST:PORT/ingest and get estimates of their stream back; subscribers on "
        "ws://HOST:PORT/feed[?stream=ID] get the estimates of every stream (or one). Protocol, error codes "
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
        "Origin header get 403; clients without an Origin header are not browsers and are allowed)",
    )
    tuning = p.add_argument_group("server tuning (measured in the README's benchmark section)")
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
        "lock back to the model thread sooner after each of its native calls",
    )
    add_limit_options(p)
    _add_runtime_options(p)
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
                raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.run
    return asyncio.run


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--model, --hop-s, --backend, --device, --no-vad, --threads (shared with the other commands)."""
    from streamer import cli

    cli.add_runtime_options(p)


def _build_runtime(args: argparse.Namespace, limits: ServerLimits) -> Any:
    from streamer import cli

    return cli.build_runtime(args, max_streams=limits.max_streams)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # its debug lines would show ?token=
    try:
        limits = limits_from_args(args)
        run_loop = loop_runner(args.event_loop)
        if not (0 < args.gil_switch_ms < 1000):
            raise ValueError(f"--gil-switch-ms must be between 0 and 1000, got {args.gil_switch_ms:g}")
    except ValueError as exc:
        print(f"emostream serve: {exc}", file=sys.stderr)
        return 2
    token = args.token or None
    if (warning := exposure_warning(args.host, token)) is not None:
        log.warning(warning)
    runtime = _build_runtime(args, limits)
    sys.setswitchinterval(args.gil_switch_ms / 1000.0)
    server = EmoServer(runtime, limits, Access(token, tuple(args.allow_origin)))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def listening(host: str, port: int) -> None:
            print(LISTENING_LINE.format(host=host, port=port), file=sys.stderr, flush=True)
            log.info(
                "model %s, window %.2f s, hop %.2f s; auth %s; paths %s",
                runtime.model_name,
                runtime.window_s,
                runtime.hop_s,
                "token" if token else "none",
                ", ".join(PATHS),
            )

        await server.run(args.host, args.port, stop, listening)

    runtime.start()
    try:
        run_loop(main())
    except OSError as exc:
        print(f"emostream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.stop()
    log.info("stopped")
    return 0
