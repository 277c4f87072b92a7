"""The WebSocket server: handshake checks, routing of /ingest and /feed, the stream-id registry, lifetime.

One asyncio event loop owns every connection; the runtime's worker runs in its own thread and
reaches the loop only through ``Hub`` (``call_soon_threadsafe``). Wire format and limits:
``streamer.server.protocol`` and ``streamer.server.limits``, documented in docs/protocol.md. The
command line (``emostream serve``) is ``streamer.cli.serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from emostream.streamer.core.events import ErrorEvent
from emostream.streamer.server.access import Access
from emostream.streamer.server.hub import Hub, HubFullError
from emostream.streamer.server.ingest import IngestConnection, IngestSession, RuntimeLike, pump
from emostream.streamer.server.limits import ServerLimits
from emostream.streamer.server.protocol import STREAM_ID_PATTERN, ProtocolError, SubscribedMessage
from emostream.streamer.server.static import StaticFiles

if TYPE_CHECKING:
    from emostream.streamer.server.broker import Broker

log = logging.getLogger("emostream.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
PATHS = ("/ingest", "/feed")
LISTENING_LINE = "emostream serve: listening on ws://{host}:{port} (live meter: http://{host}:{port}/)"  # once bound
LISTENING_PATTERN = re.compile(r"listening on ws://([^:\s]+):(\d+)")  # what launchers wait for: host, port


@dataclass
class ServerStats:
    connections: int = 0
    streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class EmoServer:
    """Routes WebSocket connections to ingest sessions and feed subscriptions over one runtime."""

    def __init__(
        self, runtime: RuntimeLike, limits: ServerLimits, access: Access, broker: Broker | None = None
    ) -> None:
        self.runtime = runtime
        self.limits = limits
        self.access = access
        self.broker = broker  # cluster-wide feed and stream ids (streamer.server.broker); None: this process only
        self.routes: dict[str, Callable[[ServerConnection, Request], Response]] = {}  # plain-HTTP GET paths
        self.routes.update(StaticFiles().routes())  # the browser page: /, /wall, /static/*
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
        if (route := self.routes.get(url.path)) is not None:
            return route(connection, request)
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
            writer = asyncio.create_task(pump(outbox, ws, self.limits))
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

    async def claim_stream(self, wanted: str | None) -> str:
        if len(self._stream_ids) >= self.limits.max_streams:
            raise ProtocolError(
                "too_many_streams", f"the server has its maximum of {self.limits.max_streams} streams"
            )
        if wanted is None:
            wanted = f"s{next(self._ids)}-{secrets.token_hex(3)}"
        elif wanted in self._stream_ids:
            raise ProtocolError("stream_in_use", f"stream {wanted!r} is already being streamed")
        self._stream_ids.add(wanted)
        if self.broker is not None and not await self.broker.claim(wanted):
            self._stream_ids.discard(wanted)
            raise ProtocolError("stream_in_use", f"stream {wanted!r} is already being streamed (on another worker)")
        self.stats.streams = len(self._stream_ids)
        return wanted

    @property
    def stream_ids(self) -> set[str]:
        """The ids of the streams of this process now (a copy)."""
        return set(self._stream_ids)

    def release_stream(self, stream_id: str) -> None:
        self._stream_ids.discard(stream_id)
        if self.broker is not None:
            self.broker.release(stream_id)
        self.stats.streams = len(self._stream_ids)

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(
        self,
        host: str,
        port: int,
        stop: asyncio.Event,
        on_listening: Callable[[str, int], None] | None = None,
        **serve_options: Any,
    ) -> None:
        """Serve until ``stop`` is set; then close every connection with 1001 and return.

        With a broker, it is connected first (``BrokerUnavailableError`` if it does not answer) and
        the hub publishes through it. ``serve_options`` go to ``create_server`` (e.g. ``reuse_port``).
        """
        loop = asyncio.get_running_loop()
        limits = self.limits
        if self.broker is None:
            self.hub = Hub(loop, limits.max_subscribers, limits.queue_messages)
        else:
            self.hub = self.broker.make_hub(loop, limits.max_subscribers, limits.queue_messages)
            await self.broker.start()
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
                create_connection=IngestConnection,  # /ingest audio skips recv() (streamer.server.ingest)
                **serve_options,
            ) as server:
                bound_port = _bound_port(server)
                self.access = self.access.for_port(bound_port)  # its own loopback page may connect
                if on_listening is not None:
                    on_listening(host, bound_port)
                await stop.wait()
                log.info("shutting down: closing %d connection(s) with 1001", self.stats.connections)
                server.close()  # code 1001 (going away) to every connection
                await server.wait_closed()
        finally:
            self.runtime.remove_sink(self.hub)
            if self.broker is not None:
                await self.broker.close()
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
