"""Operability of one server process: GET /healthz, GET /metrics, and the wiring that fills the metrics.

``Ops`` adds the two plain-HTTP paths to an ``EmoServer`` (``EmoServer.routes``), a metrics sink
to its runtime, the runtime's batch observer, and the broker's metrics; ``Ops.poll`` (a task on
the event loop) refreshes the gauges once a second. /healthz needs no token (load balancers probe
it); /metrics needs the server's token when one is set (Prometheus: ``authorization``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from emostream.streamer.server.metrics import Metrics, MetricsSink

if TYPE_CHECKING:
    from emostream.streamer.server.app import EmoServer

Route = Callable[[ServerConnection, Request], Response]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Which worker this process is: ``index`` of ``workers``, and the parent's status file (None: no parent)."""

    index: int = 0
    workers: int = 1
    status_path: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """GET /healthz: 200 when this worker serves and its broker (if any) answers, else 503."""

    ready: bool
    worker: int
    workers: int
    workers_alive: int
    broker: str  # "none", "connected" or "lost"
    streams: int
    connections: int

    @property
    def ok(self) -> bool:
        return self.ready and self.broker != "lost"

    def to_json(self) -> str:
        return json.dumps(
            {"status": "ok" if self.ok else "unavailable", "ready": self.ready, "worker": self.worker,
             "workers": self.workers, "workers_alive": self.workers_alive, "broker": self.broker,
             "streams": self.streams, "connections": self.connections},
            separators=(",", ":"),
        )  # fmt: skip


def read_supervisor_status(worker: WorkerInfo) -> tuple[int, int]:
    """(workers, workers alive) from the file the ``--workers`` parent keeps; (1, 1) without a parent."""
    if worker.status_path is None:
        return worker.workers, worker.workers
    try:
        with open(worker.status_path, encoding="utf-8") as f:
            d = json.load(f)
        return int(d["workers"]), int(d["alive"])
    except (OSError, ValueError, KeyError, TypeError):
        return worker.workers, 0


class Ops:
    """Metrics and health of one server process, wired into its ``EmoServer`` and runtime."""

    def __init__(self, server: EmoServer, worker: WorkerInfo | None = None, poll_s: float = 1.0) -> None:
        self.server = server
        self.worker = worker or WorkerInfo()
        self.poll_s = poll_s
        self.metrics = Metrics(server.runtime.sample_rate_hz)
        self.sink = MetricsSink(self.metrics)
        server.routes.update({"/healthz": self._healthz, "/metrics": self._metrics})
        server.runtime.add_sink(self.sink)
        observe = getattr(server.runtime, "observe_batches", None)
        if observe is not None:
            observe(self.metrics.observe_batch)
        if server.broker is not None:
            server.broker.metrics = self.metrics
            self.metrics.broker_connected.set(0)
        self.reset()

    def reset(self) -> None:
        self.ready = False  # set once the server listens

    def health(self) -> Health:
        workers, alive = read_supervisor_status(self.worker)
        broker = self.server.broker
        stats = self.server.stats
        return Health(
            ready=self.ready,
            worker=self.worker.index,
            workers=workers,
            workers_alive=alive,
            broker="none" if broker is None else "connected" if broker.connected else "lost",
            streams=stats.streams,
            connections=stats.connections,
        )

    def refresh(self) -> None:
        s, broker = self.server.stats, self.server.broker
        self.metrics.poll(
            s.streams, s.connections, s.errors, len(broker.pending) if broker is not None else 0
        )
        self.sink.retain(self.server.stream_ids)

    async def poll(self) -> None:
        """Refresh the gauges every ``poll_s`` until cancelled."""
        while True:
            self.refresh()
            await asyncio.sleep(self.poll_s)

    # ---- the routes (event-loop thread, from process_request) -----------------------------------

    def _healthz(self, connection: ServerConnection, request: Request) -> Response:
        h = self.health()
        response = connection.respond(
            HTTPStatus.OK if h.ok else HTTPStatus.SERVICE_UNAVAILABLE, h.to_json() + "\n"
        )
        _set_header(response, "Content-Type", "application/json")
        return response

    def _metrics(self, connection: ServerConnection, request: Request) -> Response:
        if not self.server.access.token_ok(request.headers, parse_qs(urlsplit(request.path).query)):
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="emostream"'
            return response
        self.refresh()
        body, content_type = self.metrics.exposition()
        response = connection.respond(HTTPStatus.OK, "")
        _set_header(response, "Content-Type", content_type)
        _set_header(response, "Content-Length", str(len(body)))
        return dataclasses.replace(response, body=body)


def _set_header(response: Response, name: str, value: str) -> None:
    """Replace a header (websockets' ``Headers.__setitem__`` adds one more)."""
    del response.headers[name]
    response.headers[name] = value
