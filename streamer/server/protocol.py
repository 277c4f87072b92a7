"""The WebSocket wire protocol: client messages parsed and validated, error codes and close codes.

Pure and I/O-free. ``parse_control`` turns a text message into a ``StartMessage`` or
``StopMessage``; ``decode_audio`` turns a binary message into ``(frames, channels)`` float32.
Every failure is a ``ProtocolError`` carrying the error code sent to the client and the
WebSocket close code that follows it (docs/protocol.md lists them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeGuard

import numpy as np

from emostream.streamer.core.resample import INT16_SCALE, check_channels
from emostream.streamer.server.limits import ServerLimits

ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "f32le": 4}  # encoding -> bytes per sample
PcmEncoding = Literal["pcm_s16le", "f32le"]
_S16LE = np.dtype("<i2")
_PCM_DTYPES: dict[str, np.dtype] = {"pcm_s16le": _S16LE, "f32le": np.dtype("<f4")}
STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")

# WebSocket close codes (RFC 6455 section 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# error code -> close code: the whole vocabulary of {"type": "error", "code": ...}
ERROR_CLOSE_CODES: dict[str, int] = {
    "bad_json": CLOSE_POLICY,  # text message that is not a JSON object (or too long)
    "unknown_type": CLOSE_POLICY,  # JSON object whose "type" is missing or not start/stop
    "bad_encoding": CLOSE_UNSUPPORTED_DATA,  # start: encoding not one of ENCODINGS
    "bad_sample_rate": CLOSE_POLICY,  # start: not an integer in the allowed range
    "bad_channels": CLOSE_UNSUPPORTED_DATA,  # start: not an integer in 1..max_channels
    "bad_stream_id": CLOSE_POLICY,  # start: stream id not a short [A-Za-z0-9._:-] string
    "stream_in_use": CLOSE_POLICY,  # start: another connection streams under this id
    "bad_start": CLOSE_POLICY,  # start: refused by the pipeline for another reason
    "no_start": CLOSE_POLICY,  # audio (or stop) before start
    "duplicate_start": CLOSE_POLICY,  # a second start on one connection
    "unexpected_text": CLOSE_UNSUPPORTED_DATA,  # text other than stop where audio is expected
    "bad_frame_length": CLOSE_POLICY,  # binary message not a whole number of sample frames
    "bad_samples": CLOSE_POLICY,  # f32le audio with NaN or infinity
    "too_big": CLOSE_TOO_BIG,  # message over max_message_bytes
    "unexpected_message": CLOSE_UNSUPPORTED_DATA,  # a subscriber (/feed) sent something
    "idle_timeout": CLOSE_POLICY,  # ingest: no message for idle_timeout_s
    "too_many_streams": CLOSE_TRY_AGAIN_LATER,
    "too_many_subscribers": CLOSE_TRY_AGAIN_LATER,
    "too_many_connections": CLOSE_TRY_AGAIN_LATER,
    "internal": CLOSE_INTERNAL,
}


class ProtocolError(Exception):
    """A client message broke the protocol: ``code`` for the client, then close with ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        if code not in ERROR_CLOSE_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = ERROR_CLOSE_CODES[code] if close_code is None else close_code


@dataclass(frozen=True, slots=True)
class StartMessage:
    """``{"type":"start","sample_rate":48000,"encoding":"pcm_s16le","channels":1,"stream":"id"}``.

    ``stream`` is None when the client leaves the id to the server.
    """

    type: ClassVar[str] = "start"

    sample_rate_hz: int
    encoding: str
    channels: int = 1
    stream: str | None = None

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (all channels)."""
        return ENCODINGS[self.encoding] * self.channels

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "sample_rate": self.sample_rate_hz,
            "encoding": self.encoding,
            "channels": self.channels,
        }
        if self.stream is not None:
            d["stream"] = self.stream
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StopMessage:
    """``{"type":"stop"}``: flush the final window, send the last estimates and ``end``, close 1000."""

    type: ClassVar[str] = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


ControlMessage = StartMessage | StopMessage
DEFAULT_LIMITS = ServerLimits()


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_start(obj: dict[str, Any], limits: ServerLimits) -> StartMessage:
    rate = obj.get("sample_rate")
    if not _is_int(rate) or not limits.min_sample_rate_hz <= rate <= limits.max_sample_rate_hz:
        raise ProtocolError(
            "bad_sample_rate",
            f"sample_rate must be an integer in {limits.min_sample_rate_hz}..{limits.max_sample_rate_hz} Hz, "
            f"got {_short(rate)}",
        )
    encoding = obj.get("encoding")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError(
            "bad_encoding", f"encoding must be one of {sorted(ENCODINGS)}, got {_short(encoding)}"
        )
    channels = obj.get("channels", 1)
    if not _is_int(channels) or not 1 <= channels <= limits.max_channels:
        raise ProtocolError(
            "bad_channels", f"channels must be an integer in 1..{limits.max_channels}, got {_short(channels)}"
        )
    stream = obj.get("stream")
    if stream is not None and (
        not isinstance(stream, str)
        or len(stream) > limits.max_stream_id_chars
        or STREAM_ID_PATTERN.fullmatch(stream) is None
    ):
        raise ProtocolError(
            "bad_stream_id",
            f"stream must be 1..{limits.max_stream_id_chars} characters of [A-Za-z0-9._:-] starting with a "
            f"letter or digit, got {_short(stream)}",
        )
    return StartMessage(sample_rate_hz=rate, encoding=encoding, channels=channels, stream=stream)


def _short(x: Any, n: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def parse_control(text: str | bytes, limits: ServerLimits = DEFAULT_LIMITS) -> ControlMessage:
    """One text message -> ``StartMessage`` | ``StopMessage``; anything else raises ``ProtocolError``.

    Keys other than the documented ones are ignored (room for later fields).
    """
    if len(text) > limits.max_control_chars:
        raise ProtocolError("bad_json", f"control message longer than {limits.max_control_chars} characters")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints, deep nesting
        raise ProtocolError(
            "bad_json", f"control message is not valid JSON: {_short(str(exc), 80)}"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"control message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "start":
        return _parse_start(obj, limits)
    if kind == "stop":
        return StopMessage()
    raise ProtocolError("unknown_type", f'"type" must be "start" or "stop", got {_short(kind)}')


def decode_pcm(data: bytes | bytearray | memoryview, encoding: PcmEncoding, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM bytes -> (frames, channels) float32.

    ``pcm_s16le`` is scaled into [-1, 1); ``f32le`` is taken as is but NaN/inf are rejected.
    """
    check_channels(channels)
    if encoding not in _PCM_DTYPES:
        raise ValueError(f"unknown PCM encoding {encoding!r}; expected one of {sorted(_PCM_DTYPES)}")
    dtype = _PCM_DTYPES[encoding]
    frame_bytes = dtype.itemsize * channels
    n_bytes = len(memoryview(data).cast("B"))
    if n_bytes % frame_bytes != 0:
        raise ValueError(
            f"{n_bytes} bytes of {encoding} audio with {channels} channel(s) is not a whole number of "
            f"{frame_bytes}-byte frames ({n_bytes % frame_bytes} trailing bytes)"
        )
    raw = np.frombuffer(data, dtype=dtype)
    if encoding == "pcm_s16le":
        out = raw.astype(np.float32) * np.float32(INT16_SCALE)
    else:
        out = raw.astype(np.float32)  # native-endian copy
        bad = ~np.isfinite(out)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"f32le audio contains {int(bad.sum())} non-finite sample(s) (NaN/inf); first at "
                f"frame {first // channels}, channel {first % channels}"
            )
    return out.reshape(-1, channels)


def audio_frames(data: bytes | bytearray | memoryview, start: StartMessage) -> np.ndarray:
    """One binary message -> ``(frames, channels)`` samples as sent, checked, without a float copy.

    ``pcm_s16le``: an int16 view of the message (the pipeline scales it when it mixes to mono);
    ``f32le``: float32, NaN/inf refused. The hot path of /ingest: one length check, one view.
    """
    n_bytes = len(data) if isinstance(data, (bytes, bytearray)) else len(memoryview(data).cast("B"))  # noqa: UP038
    if n_bytes % start.frame_bytes != 0:
        raise ProtocolError(
            "bad_frame_length",
            f"{n_bytes} bytes is not a whole number of {start.frame_bytes}-byte frames "
            f"({start.encoding}, {start.channels} channel(s))",
        )
    if start.encoding == "pcm_s16le":
        return np.frombuffer(data, dtype=_S16LE).reshape(-1, start.channels)
    try:
        return decode_pcm(data, start.encoding, start.channels)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ProtocolError("bad_samples", str(exc)) from None


def decode_audio(data: bytes | bytearray | memoryview, start: StartMessage) -> np.ndarray:
    """One binary message -> ``(frames, channels)`` float32 in [-1, 1) for s16, as sent for f32."""
    frames = audio_frames(data, start)
    if frames.dtype.kind == "i":
        return frames.astype(np.float32) * np.float32(INT16_SCALE)
    return frames


# ---- server -> client messages (besides ReadyEvent, Estimate and ErrorEvent of streamer.core.events) ----


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class LagMessage:
    """``dropped`` outgoing messages were discarded (oldest first) since the last lag message."""

    type: ClassVar[str] = "lag"

    dropped: int
    dropped_total: int

    def to_json(self) -> str:
        return _dumps({"type": self.type, "dropped": self.dropped, "dropped_total": self.dropped_total})


@dataclass(frozen=True, slots=True)
class ThrottledMessage:
    """Audio beyond the ingest rate limit was discarded: counts in frames at the stream's input rate."""

    type: ClassVar[str] = "throttled"

    stream: str
    dropped_frames: int  # since the last throttled message
    dropped_total_frames: int
    realtime_factor: float
    burst_s: float

    def to_json(self) -> str:
        return _dumps(
            {
                "type": self.type,
                "stream": self.stream,
                "dropped_frames": self.dropped_frames,
                "dropped_total_frames": self.dropped_total_frames,
                "realtime_factor": self.realtime_factor,
                "burst_s": self.burst_s,
            }
        )


@dataclass(frozen=True, slots=True)
class WindowErrorMessage:
    """One window of the stream could not be analysed (the pipeline's ErrorEvent); the stream goes on."""

    type: ClassVar[str] = "window_error"

    code: str  # inference_failed | audio_overwritten | internal
    message: str
    stream: str | None

    @classmethod
    def of(cls, event: Any) -> WindowErrorMessage:
        return cls(str(event.code), str(event.message), event.stream)

    def to_json(self) -> str:
        return _dumps({"type": self.type, "code": self.code, "message": self.message, "stream": self.stream})


@dataclass(frozen=True, slots=True)
class EndMessage:
    """Sent after ``stop`` once the final estimates are out; the server then closes with 1000."""

    type: ClassVar[str] = "end"

    stream: str
    received_frames: int  # audio frames received (input rate), throttled ones included
    throttled_frames: int  # of those, discarded by the rate limit
    estimates: int  # estimates queued for this connection
    dropped_messages: int  # of those (and other messages), discarded because the client read too slowly

    def to_json(self) -> str:
        return _dumps(
            {
                "type": self.type,
                "stream": self.stream,
                "received_frames": self.received_frames,
                "throttled_frames": self.throttled_frames,
                "estimates": self.estimates,
                "dropped_messages": self.dropped_messages,
            }
        )


@dataclass(frozen=True, slots=True)
class SubscribedMessage:
    """First message on ``/feed``: what the subscriber will get."""

    type: ClassVar[str] = "subscribed"

    stream: str | None  # None: every stream
    labels: tuple[str, ...]
    model: str
    queue_messages: int

    def to_json(self) -> str:
        return _dumps(
            {
                "type": self.type,
                "stream": self.stream,
                "labels": list(self.labels),
                "model": self.model,
                "queue_messages": self.queue_messages,
            }
        )
