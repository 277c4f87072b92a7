"""WebSocket hub sink: fans estimates out to connections through bounded per-connection outboxes.

A slow reader never stalls the runtime or anyone else: its worker thread only schedules a
call on the event loop (``publish`` never blocks), and each connection's ``Outbox`` holds at
most ``maxlen`` messages, dropping the OLDEST beyond that and counting the drops. The
connection's writer then gets a ``lag`` message before its next message.
"""

from __future__ import annotations

import asyncio
from collections import deque

from emostream.streamer.core.events import Estimate
from emostream.streamer.server.protocol import LagMessage


class HubFullError(Exception):
    """No room for another subscriber."""


class Outbox:
    """Outgoing text messages of one connection. Used from the event-loop thread only.

    ``put`` never blocks; ``get`` waits for a message and returns None once closed and empty.
    After drops, ``get`` first returns a lag message (``{"type":"lag","dropped":N,...}``).
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        self.maxlen = maxlen
        self.reset()

    def reset(self) -> None:
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.put_total = 0
        self.dropped_total = 0
        self._dropped_unreported = 0

    def put(self, message: str) -> None:
        if self.closed:
            return
        if len(self._queue) >= self.maxlen:
            self._queue.popleft()
            self.dropped_total += 1
            self._dropped_unreported += 1
        self._queue.append(message)
        self.put_total += 1
        self._ready.set()

    def close(self) -> None:
        """No more puts; ``get`` drains what is queued, then returns None."""
        self.closed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> str | None:
        while not self._queue and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self._dropped_unreported:
            lag = LagMessage(self._dropped_unreported, self.dropped_total)
            self._dropped_unreported = 0
            return lag.to_json()
        if not self._queue:
            return None
        return self._queue.popleft()


class Hub:
    """The WebSocket sink: ``publish`` (any thread) -> every subscribed ``Outbox`` (loop thread).

    A subscription is to all streams (``stream=None``) or to one stream id. Ingest connections
    get their own stream's estimates through ``deliver`` without counting as subscribers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_subscribers: int, queue_messages: int) -> None:
        self.loop = loop
        self.max_subscribers = max_subscribers
        self.queue_messages = queue_messages
        self.reset()

    def reset(self) -> None:
        self._subscribers: dict[Outbox, str | None] = {}
        self.published = 0

    # ---- the runtime's worker thread ----------------------------------------------------------------

    def publish(self, event: Estimate) -> None:
        """The ``Sink`` end: called from the runtime's worker thread; schedules the fan-out and returns."""
        self.deliver(None, event)

    def deliver(self, outbox: Outbox | None, event: Estimate) -> None:
        """From any thread: serialise once, then route on the loop (to ``outbox`` or to subscribers)."""
        text = event.to_json()
        try:
            if outbox is None:
                self.loop.call_soon_threadsafe(self._route, event.stream, text)
            else:
                self.loop.call_soon_threadsafe(outbox.put, text)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    def deliver_text(self, outbox: Outbox, text: str) -> None:
        """From any thread: queue one message on ``outbox``."""
        try:
            self.loop.call_soon_threadsafe(outbox.put, text)
        except RuntimeError:
            pass

    # ---- event-loop thread -----------------------------------------------------------------

    def _route(self, stream: str, text: str) -> None:
        self.published += 1
        for outbox, wanted in self._subscribers.items():
            if wanted is None or wanted == stream:
                outbox.put(text)

    def subscribe(self, stream: str | None) -> Outbox:
        if len(self._subscribers) >= self.max_subscribers:
            raise HubFullError(f"the server has its maximum of {self.max_subscribers} subscribers")
        outbox = Outbox(self.queue_messages)
        self._subscribers[outbox] = stream
        return outbox

    def unsubscribe(self, outbox: Outbox) -> None:
        outbox.close()
        self._subscribers.pop(outbox, None)

    @property
    def n_subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        for outbox in list(self._subscribers):
            self.unsubscribe(outbox)
