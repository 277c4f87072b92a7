"""The WebSocket server's limits, as one frozen config, and the token bucket its rate limit implies.

Every size, count, rate and timeout the server enforces is a field of ``ServerLimits`` (each
rule written once, with its help sentence as field metadata); ``emostream serve`` exposes each as a
``--limit-*`` option and
docs/protocol.md states the defaults. ``TokenBucket`` is the ingest rate policy; it reads no
clock: callers pass ``now_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from emostream.streamer.core.resample import MAX_CHANNELS, MAX_RATE_HZ


def _limit(default: Any, help: str) -> Any:
    """A ``ServerLimits`` field: its default and the one sentence ``--limit-*`` shows as help."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits of one ``emostream serve`` process (defaults in brackets in docs/protocol.md).

    Message sizes are in bytes of one WebSocket message; rates in audio seconds per wall-clock
    second ("x real time"); times in seconds.
    """

    max_message_bytes: int = _limit(
        1 << 20, "largest WebSocket message accepted; larger: error too_big, close 1009"
    )
    hard_message_bytes_factor: int = _limit(
        2, "websockets itself drops messages over this many times max-message-bytes"
    )
    max_control_chars: int = _limit(4096, "longest JSON control message")
    max_connections: int = _limit(512, "open connections of all kinds; more: HTTP 503")
    max_streams: int = _limit(128, "concurrent ingest streams; more: close 1013")
    max_subscribers: int = _limit(64, "concurrent /feed subscribers; more: close 1013")
    queue_messages: int = _limit(
        256, "outgoing messages queued per connection; beyond it the oldest are dropped"
    )
    write_buffer_bytes: int = _limit(
        32_768, "bytes buffered per connection before sending waits for the client to read"
    )
    min_sample_rate_hz: int = _limit(8_000, "lowest input sample rate")
    max_sample_rate_hz: int = _limit(192_000, "highest input sample rate")
    max_channels: int = _limit(8, "most input channels")
    max_stream_id_chars: int = _limit(64, "longest stream id")
    realtime_factor: float = _limit(
        2.0, "sustained ingest rate allowed per stream, in x real time (excess dropped, reported)"
    )
    burst_s: float = _limit(5.0, "seconds of audio a stream may send at once beyond the sustained rate")
    report_interval_s: float = _limit(1.0, "at most one 'throttled' message per stream per this many seconds")
    idle_timeout_s: float = _limit(30.0, "close an ingest connection that sends nothing for this long")
    ping_interval_s: float = _limit(20.0, "keepalive ping interval")
    ping_timeout_s: float = _limit(20.0, "close a connection whose pong is this late")
    close_timeout_s: float = _limit(5.0, "wait this long for the peer's close frame")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"ServerLimits.{f.name} must be a finite number, got {value!r}")
            if value <= 0:
                raise ValueError(f"ServerLimits.{f.name} must be positive, got {value!r}")
        if not 1 <= self.min_sample_rate_hz <= self.max_sample_rate_hz <= MAX_RATE_HZ:
            raise ValueError(
                f"need 1 <= min_sample_rate_hz <= max_sample_rate_hz <= {MAX_RATE_HZ}, got "
                f"{self.min_sample_rate_hz}..{self.max_sample_rate_hz}"
            )
        if self.max_channels > MAX_CHANNELS:
            raise ValueError(f"max_channels must be at most {MAX_CHANNELS}, got {self.max_channels}")

    @property
    def hard_message_bytes(self) -> int:
        """websockets' ``max_size``: beyond it the library closes with 1009 before we see the message."""
        return self.max_message_bytes * self.hard_message_bytes_factor


class TokenBucket:
    """Token bucket counted in audio frames: ``rate_per_s`` sustained, ``capacity`` burst.

    ``take(n, now_s)`` returns how many of ``n`` frames fit (the first ones); the rest are the
    excess. The bucket starts full. With ``realtime_per_s`` (the stream's frames per second of
    real time), a stream that fell behind real time may always catch up: frames that keep its
    total within ``capacity`` of real time since the start are granted even when the bucket is
    empty (a client that stalled 10 s and then sends its backlog loses nothing).
    """

    def __init__(
        self, rate_per_s: float, capacity: float, now_s: float, realtime_per_s: float | None = None
    ) -> None:
        if not rate_per_s > 0 or not capacity > 0:
            raise ValueError(f"rate_per_s and capacity must be positive, got {rate_per_s}, {capacity}")
        if realtime_per_s is not None and not realtime_per_s > 0:
            raise ValueError(f"realtime_per_s must be positive, got {realtime_per_s}")
        self.rate_per_s = float(rate_per_s)
        self.capacity = float(capacity)
        self.realtime_per_s = realtime_per_s
        self.reset(now_s)

    @classmethod
    def for_stream(cls, limits: ServerLimits, sample_rate_hz: int, now_s: float) -> TokenBucket:
        """The ingest policy: ``realtime_factor`` x real time with a burst of ``burst_s`` seconds,
        and catching up to real time (plus ``burst_s``) is always allowed."""
        return cls(
            limits.realtime_factor * sample_rate_hz,
            limits.burst_s * sample_rate_hz,
            now_s,
            realtime_per_s=float(sample_rate_hz),
        )

    def reset(self, now_s: float) -> None:
        self._tokens = self.capacity
        self._last_s = float(now_s)
        self._start_s = float(now_s)
        self._granted = 0

    def take(self, n: int, now_s: float) -> int:
        if now_s > self._last_s:
            self._tokens = min(self.capacity, self._tokens + (now_s - self._last_s) * self.rate_per_s)
            self._last_s = float(now_s)
        if n <= self._tokens:  # within the rate: every message of a real-time stream
            self._tokens -= n
            self._granted += n
            return int(n)
        allowed = min(int(n), int(self._tokens))
        if self.realtime_per_s is not None and allowed < n:
            behind = (self._last_s - self._start_s) * self.realtime_per_s + self.capacity - self._granted
            allowed = max(allowed, min(int(n), int(behind)))
        allowed = max(0, allowed)
        self._tokens = max(0.0, self._tokens - allowed)
        self._granted += allowed
        return allowed
