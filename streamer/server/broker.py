"""The Redis broker: one feed for every worker of every machine, and stream ids unique across them.

``emostream serve --broker URL`` (or ``--workers N``, with its private Redis) gives each worker
process one ``Broker``:

- **Publish.** The runtime's estimates go to ``BrokerHub.publish`` (worker thread), which queues
  them on the event loop; one task writes them to the Redis Stream ``emostream:feed`` in batches
  (one pipeline of ``XADD ... MAXLEN ~ feed_maxlen`` per batch). While Redis is away the queue
  holds up to ``pending_max`` estimates (the oldest dropped beyond that) and is written once it is
  back, so a short outage loses nothing.
- **Feed.** One task per worker reads the Stream (``XREAD BLOCK``) and hands every entry to the
  local ``/feed`` subscribers through the same ``Outbox`` es as a single process (same lag rules).
  Entries of a stream are in ``seq`` order (a stream lives in one worker, which writes in order);
  a jump in ``seq`` reaches the subscribers as a ``gap`` message. A worker without subscribers
  reads nothing: it only refreshes its position (every ``idle_poll_s``, at once on a subscribe).
- **Stream ids.** ``claim`` is ``SET emostream:stream:ID OWNER NX EX claim_ttl_s``; a heartbeat
  renews this worker's claims every ``heartbeat_s``, ``release`` deletes the key if still ours.
- **Faults.** A failed Redis call marks the broker lost: subscribers get one ``feed_error``
  message (``broker_lost``), ingest and each connection's own estimates go on (claims are then
  checked locally and written at the next heartbeat), and every task retries with exponential
  backoff. Once Redis answers again, subscribers get ``feed_resumed`` and the feed goes on from
  the last entry read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from emostream.streamer.core.events import Estimate
from emostream.streamer.server.brokerconf import (
    BrokerConfig,
    BrokerUnavailableError,
    FeedErrorMessage,
    FeedResumedMessage,
    GapMessage,
    connect_client,
    redact_url,
    redis_errors,
)
from emostream.streamer.server.hub import Hub, Outbox

if TYPE_CHECKING:
    from emostream.streamer.server.metrics import Metrics

log = logging.getLogger("emostream.broker")

_RENEW = """local v = redis.call('get', KEYS[1])
if v == false or v == ARGV[1] then redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class BrokerHub(Hub):
    """The hub of a worker with a broker: estimates go to Redis; /feed subscribers get what Redis returns."""

    def __init__(
        self, broker: Broker, loop: asyncio.AbstractEventLoop, max_subscribers: int, queue_messages: int
    ) -> None:
        self.broker = broker
        super().__init__(loop, max_subscribers, queue_messages)

    def publish(self, event: Estimate) -> None:
        text = event.to_json()
        try:
            self.loop.call_soon_threadsafe(self.broker.enqueue, event.stream, event.seq, text)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    def subscribe(self, stream: str | None) -> Outbox:
        outbox = super().subscribe(stream)
        self.broker._subscribed.set()
        return outbox

    def route(self, stream: str, text: str) -> None:
        """Event-loop thread: to the subscribers of ``stream`` and of every stream."""
        self._route(stream, text)

    def broadcast(self, text: str) -> None:
        """Event-loop thread: to every subscriber."""
        for outbox in list(self._subscribers):
            outbox.put(text)


class Broker:
    """One worker's link to Redis: publisher, feed reader, stream-id claims; see the module docstring."""

    def __init__(self, config: BrokerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.reset()

    def reset(self) -> None:
        self.hub: BrokerHub | None = None
        self.connected = False
        self.lost_at: float | None = None
        self.published = 0
        self.dropped = 0  # estimates dropped from the queue while Redis was away
        self.read = 0
        self.gaps = 0
        self._client: Any = None
        self.pending: deque[tuple[str, int, str, float]] = deque()
        self._wake: asyncio.Event | None = None
        self._subscribed = asyncio.Event()  # set by BrokerHub.subscribe: wakes an idle feed reader
        self._claims: set[str] = set()
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._renew: Any = None
        self._release: Any = None

    # ---- lifetime (event-loop thread) ---------------------------------------------------------

    def make_hub(
        self, loop: asyncio.AbstractEventLoop, max_subscribers: int, queue_messages: int
    ) -> BrokerHub:
        self.hub = BrokerHub(self, loop, max_subscribers, queue_messages)
        return self.hub

    async def start(self) -> None:
        """Connect (``BrokerUnavailableError`` if Redis does not answer), then start the tasks."""
        cfg = self.config
        self._client = connect_client(cfg.url, cfg.op_timeout_s, cfg.read_block_ms / 1000 + cfg.op_timeout_s)
        try:
            async with asyncio.timeout(cfg.op_timeout_s + 1):
                await self._client.ping()
        except redis_errors() as exc:
            await self._client.aclose()
            raise BrokerUnavailableError(
                f"cannot reach the broker at {redact_url(cfg.url)}: {exc or type(exc).__name__}"
            ) from None
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._wake = asyncio.Event()
        self._set_connected(True)
        start_id = await self._last_id()
        self._tasks = [
            asyncio.create_task(self._publisher(), name="broker-publish"),
            asyncio.create_task(self._reader(start_id), name="broker-feed"),
            asyncio.create_task(self._heartbeat(), name="broker-claims"),
        ]

    async def close(self) -> None:
        """Write what is queued (briefly), release this worker's claims, stop the tasks, disconnect."""
        if self._client is None:
            return
        with contextlib.suppress(*redis_errors()):
            async with asyncio.timeout(self.config.op_timeout_s):
                while self.pending and self.connected:
                    await self._flush()
                await asyncio.gather(*(self._release_key(s) for s in list(self._claims)))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
        self._client = None

    def _set_connected(self, ok: bool, why: BaseException | None = None) -> None:
        if ok == self.connected:
            return
        self.connected = ok
        if self.metrics is not None:
            self.metrics.broker_connected.set(1 if ok else 0)
        now = time.monotonic()
        if not ok:
            self.lost_at = now
            log.warning("broker lost (%s); retrying with backoff", why or "no answer")
            if self.hub is not None:
                self.hub.broadcast(
                    FeedErrorMessage("broker_lost", f"the broker is unreachable: {why}").to_json()
                )
        elif self.lost_at is not None:
            down_s, self.lost_at = now - self.lost_at, None
            log.warning("broker back after %.1f s", down_s)
            if self.hub is not None:
                self.hub.broadcast(FeedResumedMessage(down_s).to_json())

    async def _backoff(self, delay_s: float) -> float:
        await asyncio.sleep(delay_s)
        return min(self.config.backoff_max_s, delay_s * 2)

    # ---- publish -----------------------------------------------------------------------------

    def enqueue(self, stream: str, seq: int, text: str) -> None:
        """Event-loop thread: queue one estimate for the Stream (never blocks)."""
        if len(self.pending) >= self.config.pending_max:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((stream, seq, text, time.monotonic()))
        if self._wake is not None:
            self._wake.set()

    async def _flush(self) -> None:
        cfg = self.config
        batch = [self.pending.popleft() for _ in range(min(cfg.publish_batch, len(self.pending)))]
        try:
            async with asyncio.timeout(cfg.op_timeout_s):
                async with self._client.pipeline(transaction=False) as pipe:
                    for stream, seq, text, _ in batch:
                        pipe.xadd(
                            cfg.feed_key,
                            {"s": stream, "q": seq, "e": text},
                            maxlen=cfg.feed_maxlen,
                            approximate=True,
                        )
                    await pipe.execute()
        except BaseException:
            self.pending.extendleft(reversed(batch))  # back in front, in order
            while len(self.pending) > cfg.pending_max:
                self.pending.popleft()
                self.dropped += 1
            raise
        self.published += len(batch)
        if self.metrics is not None:
            now = time.monotonic()
            for *_, queued_at in batch:
                self.metrics.publish_lag.observe(now - queued_at)

    async def _publisher(self) -> None:
        assert self._wake is not None
        delay_s = self.config.backoff_min_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.config.publish_delay_s)
            try:
                while self.pending:
                    await self._flush()
                self._set_connected(True)
                delay_s = self.config.backoff_min_s
            except redis_errors() as exc:
                self._set_connected(False, exc)
                delay_s = await self._backoff(delay_s)
                self._wake.set()

    # ---- feed --------------------------------------------------------------------------------

    async def _last_id(self) -> str:
        newest = await self._client.xrevrange(self.config.feed_key, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def _reader(self, last_id: str) -> None:
        cfg = self.config
        delay_s = cfg.backoff_min_s
        while True:
            try:
                if self.hub is not None and not self.hub.n_subscribers:
                    # nobody to serve: keep the position fresh and read nothing (parsing every
                    # estimate of the cluster costs CPU); a new subscriber wakes this at once
                    self._subscribed.clear()
                    newest = await self._last_id()
                    if not self._subscribed.is_set():  # else keep the position taken before that subscribe
                        last_id = newest
                    self._last_seq.clear()
                    self._set_connected(True)
                    delay_s = cfg.backoff_min_s
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(cfg.idle_poll_s):
                            await self._subscribed.wait()
                    continue
                reply = await self._client.xread(
                    {cfg.feed_key: last_id}, count=cfg.read_count, block=cfg.read_block_ms
                )
                self._set_connected(True)
                delay_s = cfg.backoff_min_s
            except redis_errors() as exc:
                self._set_connected(False, exc)
                delay_s = await self._backoff(delay_s)
                continue
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._deliver(fields)

    def _deliver(self, fields: dict[str, str]) -> None:
        hub = self.hub
        try:
            stream, seq, text = fields["s"], int(fields["q"]), fields["e"]
        except (KeyError, ValueError):
            log.warning("skipping a malformed feed entry: %r", fields)
            return
        self.read += 1
        last = self._last_seq.pop(stream, None)
        if last is not None and seq > last + 1:
            self.gaps += seq - last - 1
            if self.metrics is not None:
                self.metrics.feed_gaps.inc(seq - last - 1)
            if hub is not None:
                hub.route(stream, GapMessage(stream, last, seq - last - 1).to_json())
        self._last_seq[stream] = seq
        if len(self._last_seq) > self.config.gap_streams:
            self._last_seq.popitem(last=False)
        if hub is not None:
            hub.route(stream, text)

    # ---- stream ids --------------------------------------------------------------------------

    async def claim(self, stream_id: str) -> bool:
        """False when another worker holds ``stream_id``. While Redis is away only this worker is
        checked (the caller's local registry) and the claim is written at the next heartbeat."""
        if self.connected and self._client is not None:
            try:
                async with asyncio.timeout(self.config.op_timeout_s):
                    ok = await self._client.set(
                        self.config.claim_key(stream_id), self.owner, nx=True, ex=self.config.claim_ttl_s
                    )
                if not ok:
                    return False
            except redis_errors() as exc:
                self._set_connected(False, exc)
        self._claims.add(stream_id)
        return True

    def release(self, stream_id: str) -> None:
        """Event-loop thread: forget the claim now, delete its key in the background."""
        if stream_id in self._claims:
            self._claims.discard(stream_id)
            if self._client is not None and self.connected:
                task = asyncio.get_running_loop().create_task(self._release_key(stream_id))
                self._tasks.append(task)
                task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _release_key(self, stream_id: str) -> None:
        with contextlib.suppress(*redis_errors()):
            async with asyncio.timeout(self.config.op_timeout_s):
                await self._release(keys=[self.config.claim_key(stream_id)], args=[self.owner])

    async def _heartbeat(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.heartbeat_s)
            claims = sorted(self._claims)
            if not claims:
                continue
            try:
                async with asyncio.timeout(cfg.op_timeout_s):
                    async with self._client.pipeline(transaction=False) as pipe:
                        for s in claims:
                            await self._renew(
                                keys=[cfg.claim_key(s)], args=[self.owner, cfg.claim_ttl_s], client=pipe
                            )
                        renewed = await pipe.execute()
            except redis_errors() as exc:
                self._set_connected(False, exc)
                continue
            for s, ok in zip(claims, renewed, strict=True):
                if not ok:
                    log.warning(
                        "stream id %r is now also claimed by another worker (claimed while the broker was away)",
                        s,
                    )
