"""One /ingest connection: start -> audio... -> [stop], with the stream's estimates flowing back meanwhile.

``IngestSession`` parses the client's messages (``streamer.server.protocol``), applies the rate
limit (``streamer.server.limits.TokenBucket``), pushes the audio into its runtime stream and
sends ``ready``, estimates, ``throttled`` and ``end``. ``IdleWatchdog`` closes a connection that
sends nothing for ``idle_timeout_s``. The session sees its server only through ``IngestHost``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame, Opcode

from emostream.streamer.core.events import ErrorEvent, Estimate, ReadyEvent
from emostream.streamer.server.hub import Hub, Outbox
from emostream.streamer.server.limits import ServerLimits, TokenBucket
from emostream.streamer.server.protocol import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    EndMessage,
    ProtocolError,
    StartMessage,
    StopMessage,
    ThrottledMessage,
    WindowErrorMessage,
    audio_frames,
    parse_control,
)

# ---- what the server needs of the runtime (streamer.runtime) and of its server ----------------------


class StreamHandleLike(Protocol):
    def push(self, samples: np.ndarray, arrival_s: float | None = None) -> Any: ...
    def flush(self) -> Any: ...
    def frames_until_due(self) -> int: ...
    def note_dropped(self, n_input_frames: int) -> None: ...


class RuntimeLike(Protocol):
    @property
    def labels(self) -> Sequence[str]: ...
    @property
    def sample_rate_hz(self) -> int: ...
    @property
    def window_s(self) -> float: ...
    @property
    def hop_s(self) -> float: ...
    @property
    def model_name(self) -> str: ...
    @property
    def speech_gated(self) -> bool: ...

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


class IngestHost(Protocol):
    """What a session needs of the server that accepted it (``streamer.server.app.EmoServer``)."""

    runtime: RuntimeLike
    limits: ServerLimits
    hub: Hub | None

    async def claim_stream(self, wanted: str | None) -> str: ...
    def release_stream(self, stream_id: str) -> None: ...
    async def fail(self, ws: ServerConnection, exc: ProtocolError, stream: str | None = None) -> None: ...


async def pump(outbox: Outbox, ws: ServerConnection, limits: ServerLimits) -> None:
    """Send the outbox's messages in order until it is closed and empty.

    A message that cannot be sent for ``ping_interval_s + ping_timeout_s`` (the client stopped
    reading and its buffers are full) closes the connection with 1011, within ``close_timeout_s``
    more: the keepalive cannot do it then, as its ping waits behind the same full buffer.
    """
    send_timeout_s = limits.ping_interval_s + limits.ping_timeout_s
    while (message := await outbox.get()) is not None:
        try:
            async with asyncio.timeout(send_timeout_s):
                await ws.send(message)
        except TimeoutError:
            await ws.close(CLOSE_INTERNAL, "client does not read")
            return


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
        self.failure: BaseException | None = None  # set by fail(): raised instead of idle_timeout
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(
            self.waiting_since + timeout_s, self._check
        )

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

    def fail(self, exc: BaseException) -> None:
        """Wake the guarded task's ``recv`` with ``exc`` (an error found outside the task)."""
        if self.fired or self._task is None:
            return
        self.failure = exc
        self.fired = True
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


class IngestConnection(ServerConnection):
    """A ``ServerConnection`` that can hand each binary message to a callback as soon as it is parsed.

    At 20-ms frames most of the server's CPU went to the per-message machinery between the parser
    and the session (queue, future, task wake-up, ``recv``). With ``attach_binary_sink`` the
    session's ``AudioIntake`` takes unfragmented binary messages inside ``data_received`` instead;
    anything else (text, a fragmented message) detaches the sink first, so every message is still
    handled in the order it came. The sink must not raise.
    """

    binary_sink: Callable[[bytes], None] | None = None

    def process_event(self, event: Any) -> None:
        sink = self.binary_sink
        if sink is not None and type(event) is Frame:
            if event.opcode is Opcode.BINARY and event.fin:
                data = event.data
                sink(data if type(data) is bytes else bytes(data))
                return
            if event.opcode in DATA_OPCODES:
                self.binary_sink = None  # from here on, in order through recv()
        super().process_event(event)

    def attach_binary_sink(self, sink: Callable[[bytes], None]) -> bool:
        """Route binary messages to ``sink`` from now on; False (not attached) while messages wait
        in ``recv``'s queue, which must be read first to keep the order."""
        if len(self.recv_messages.frames):
            return False
        self.binary_sink = sink
        return True


class AudioIntake:
    """One stream's binary messages on their way into the runtime: frame check, rate limit, push.

    Per-message work is most of the server's CPU at 20-ms frames, so 16-bit messages are kept as
    they came (bytes, length checked) and pushed in one piece by the message that makes a window due
    (``StreamHandle.frames_until_due``): the same audio and windows, with that message's arrival
    time, for one push per window instead of one per message. Other encodings, and streams the
    runtime resamples or mixes down, are pushed message by message.
    """

    def __init__(
        self,
        handle: StreamHandleLike,
        start: StartMessage,
        bucket: TokenBucket,
        on_throttled: Callable[[int, float], None],
    ) -> None:
        self.handle = handle
        self.start = start
        self.bucket = bucket
        self.on_throttled = on_throttled  # (frames dropped now, now_s)
        self.frame_bytes = start.frame_bytes
        self.received_frames = 0
        self._room = handle.frames_until_due() if start.encoding == "pcm_s16le" else 0
        self._held: list[bytes] = []
        self._held_frames = 0

    def feed(self, message: bytes, arrival_s: float, now_s: float) -> None:
        """One binary message; ``ProtocolError`` for a malformed one (nothing of it is kept)."""
        room = self._room
        if room:  # held as bytes: check the length, make no array yet
            n_bytes = len(message)
            if n_bytes % self.frame_bytes:
                audio_frames(message, self.start)  # raises bad_frame_length
            n = n_bytes // self.frame_bytes
        else:
            samples = audio_frames(message, self.start)
            n = int(samples.shape[0])
        self.received_frames += n
        allowed = self.bucket.take(n, now_s)
        if allowed < n:
            self.handle.note_dropped(n - allowed)  # counted in the estimates' dropped_samples too
            self.on_throttled(n - allowed, now_s)
            if not allowed:
                return
        if not room:
            self.handle.push(samples[:allowed], arrival_s)
            return
        self._held.append(message if allowed == n else message[: allowed * self.frame_bytes])
        self._held_frames += allowed
        if self._held_frames >= room:  # this message completes a window
            self._push_held(arrival_s)
            self._room = self.handle.frames_until_due()

    def finish(self) -> None:
        """Before the stream's flush: push what is held (less than a window's worth)."""
        if self._held:
            self._push_held(None)

    def _push_held(self, arrival_s: float | None) -> None:
        held = self._held
        self.handle.push(audio_frames(held[0] if len(held) == 1 else b"".join(held), self.start), arrival_s)
        held.clear()
        self._held_frames = 0


def _check_size(message: str | bytes, max_bytes: int) -> None:
    if len(message) > max_bytes:
        raise ProtocolError("too_big", f"message of {len(message)} bytes exceeds the limit of {max_bytes}")


class IngestSession:
    """One /ingest connection: start -> audio... -> [stop], with estimates flowing back meanwhile."""

    def __init__(self, server: IngestHost, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.limits = server.limits
        self.reset()

    def reset(self) -> None:
        self.stream_id: str | None = None
        self.start: StartMessage | None = None
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
                if watchdog.failure is not None:
                    raise watchdog.failure from None
                raise ProtocolError(
                    "idle_timeout", f"no message for {self.limits.idle_timeout_s:g} s"
                ) from None
            raise
        finally:
            watchdog.waiting = False
        _check_size(message, self.limits.max_message_bytes)
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
        from emostream.streamer.runtime.config import StreamLimitError

        server, runtime = self.server, self.server.runtime
        assert server.hub is not None
        stream_id = await server.claim_stream(control.stream)
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
            runtime.speech_gated,
        )
        await ws.send(_ready_json(ready, start, self.limits))
        loop = asyncio.get_running_loop()
        writer = asyncio.create_task(pump(outbox, ws, self.limits))
        intake = AudioIntake(
            handle,
            start,
            TokenBucket.for_stream(self.limits, start.sample_rate_hz, loop.time()),
            lambda n_dropped, now_s: self._throttle(n_dropped, now_s, outbox),
        )
        conn = ws if isinstance(ws, IngestConnection) else None
        direct = self._direct_sink(intake) if conn is not None else None
        try:
            while True:
                if conn is not None and direct is not None and conn.binary_sink is None:
                    conn.attach_binary_sink(direct)  # when nothing waits in recv's queue
                message = await self._recv()
                arrival_s = time.monotonic()  # latency_ms counts from here (the runtime's clock)
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
                intake.feed(message, arrival_s, loop.time())
            intake.finish()
            await self._finish(handle, outbox, writer, intake.received_frames)
        except ProtocolError as exc:
            if conn is not None:
                conn.binary_sink = None
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.server.fail(ws, exc, self.stream_id)
        finally:
            if conn is not None:
                conn.binary_sink = None
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _direct_sink(self, intake: AudioIntake) -> Callable[[bytes], None]:
        """The callback ``IngestConnection`` runs per binary message: what the loop below does with
        one, without waking this task; an error wakes it (``IdleWatchdog.fail``) to close as usual."""
        ws, watchdog, max_bytes = self.ws, self._watchdog, self.limits.max_message_bytes
        assert isinstance(ws, IngestConnection) and watchdog is not None
        loop_time = watchdog.loop.time

        def on_binary(message: bytes) -> None:
            arrival_s = time.monotonic()
            now_s = watchdog.waiting_since = loop_time()  # activity, for the idle timeout
            try:
                _check_size(message, max_bytes)
                intake.feed(message, arrival_s, now_s)
            except Exception as exc:  # noqa: BLE001 - handed to the session, which closes with it
                ws.binary_sink = None
                watchdog.fail(exc)

        return on_binary

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

    async def _finish(
        self, handle: StreamHandleLike, outbox: Outbox, writer: asyncio.Task[None], received_frames: int
    ) -> None:
        """After stop: final window, its estimates, ``end``, close 1000."""
        assert self.stream_id is not None
        await asyncio.to_thread(handle.flush)
        await asyncio.to_thread(self.server.runtime.close_stream, self.stream_id)
        self._closed = True
        await asyncio.sleep(0)  # let estimate deliveries scheduled by the runtime's worker thread run
        end = EndMessage(
            self.stream_id,
            received_frames,
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
