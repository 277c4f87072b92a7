"""The one interface every place estimates leave through implements: ``publish`` and ``close``."""

from __future__ import annotations

from typing import Protocol

from emostream.streamer.core.events import Estimate


class Sink(Protocol):
    """Where estimates go (dashboard, JSON lines, the WebSocket hub).

    ``publish`` is called on the runtime's worker thread: it must never block (asyncio sinks hand
    over with ``loop.call_soon_threadsafe``). ``close`` ends the output (flushes, stops redrawing).
    """

    def publish(self, event: Estimate) -> None: ...

    def close(self) -> None: ...
