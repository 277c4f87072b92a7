"""Microphone source: lists and resolves input devices and wraps sounddevice.InputStream (edge module, does I/O).

`MicSource` delivers float32 blocks `(frames, channels)` from PortAudio's audio thread to an
`on_audio(block, n_lost_frames)` callback, reports input overflows, callback errors and a
vanished device to `on_status(MicStatus)`, and turns a dead stream into a `MicError` from
`check()`. `reopen()` closes the stream, rescans PortAudio's devices and opens the same device
again, for a caller's retry loop.

`sounddevice` is imported lazily: without the PortAudio library (`OSError: PortAudio library not
found`) every function here raises `NoInputDeviceError` saying what to install, and importing
this module still works (so `emostream demo` needs no PortAudio).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal

import numpy as np

HINT = (
    "Run `emostream live --list-devices` to see the input devices, pick one with "
    "`emostream live --device NAME_OR_INDEX`, or try `emostream demo` (no microphone needed)."
)

StatusKind = Literal["input_overflow", "device_lost", "callback_error", "stalled"]
AudioCallback = Callable[[np.ndarray, int], None]
StatusCallback = Callable[["MicStatus"], None]


class MicError(RuntimeError):
    """The microphone stream could not be opened or stopped working (message says which device and why)."""


class NoInputDeviceError(MicError):
    """No usable input device: PortAudio missing, no inputs, or a device spec that matches none or many."""


@dataclass(frozen=True, slots=True)
class InputDevice:
    """One PortAudio device that has input channels."""

    index: int
    name: str
    max_input_channels: int
    default_samplerate_hz: int
    is_default: bool
    host_api: str = ""

    def describe(self) -> str:
        """One line for device listings: `  3  USB Mic (ALSA), 2 ch, 48000 Hz  [default]`."""
        api = f" ({self.host_api})" if self.host_api else ""
        mark = "  [default]" if self.is_default else ""
        return (
            f"{self.index:3d}  {self.name}{api}, {self.max_input_channels} ch, "
            f"{self.default_samplerate_hz} Hz{mark}"
        )


@dataclass(frozen=True, slots=True)
class MicStatus:
    """Something that happened to a stream; `frame_index` counts frames since `start()`."""

    kind: StatusKind
    message: str
    frame_index: int
    n_lost_frames: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "frame_index": self.frame_index,
            "n_lost_frames": self.n_lost_frames,
        }


def _sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into NoInputDeviceError."""
    try:
        import sounddevice
    except OSError as exc:  # raised by sounddevice when libportaudio cannot be loaded
        raise NoInputDeviceError(
            f"Cannot use a microphone: the PortAudio library is not installed ({exc}). "
            "Install it with `apt-get install libportaudio2` (Debian/Ubuntu), "
            "`dnf install portaudio` (Fedora) or `brew install portaudio` (macOS). "
            "Without a microphone, `emostream demo` plays a bundled clip."
        ) from exc
    return sounddevice


def refresh_devices() -> None:
    """Re-initialise PortAudio so that devices added or removed since start-up are seen.

    Invalidates every open PortAudio stream of this process: close them first.
    """
    sd = _sounddevice()
    try:  # the rescan that sounddevice's documentation suggests (no public API for it)
        if sd._initialized:
            sd._terminate()
        sd._initialize()
    except sd.PortAudioError as exc:
        raise NoInputDeviceError(f"Cannot re-initialise PortAudio: {exc}. {HINT}") from exc


def list_input_devices() -> list[InputDevice]:
    """All devices with at least one input channel, in PortAudio's order."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
        default_index = int(sd.default.device[0])
    except sd.PortAudioError as exc:
        raise NoInputDeviceError(f"Cannot list audio devices: {exc}. {HINT}") from exc
    if default_index < 0:  # no explicit default set: ask PortAudio for its default input
        try:
            default_index = int(sd.query_devices(kind="input")["index"])
        except (sd.PortAudioError, ValueError):
            default_index = -1
    found = []
    for info in devices:
        if int(info["max_input_channels"]) <= 0:
            continue
        api_index = int(info["hostapi"])
        found.append(
            InputDevice(
                index=int(info["index"]),
                name=str(info["name"]),
                max_input_channels=int(info["max_input_channels"]),
                default_samplerate_hz=round(float(info["default_samplerate"])),
                is_default=int(info["index"]) == default_index,
                host_api=str(host_apis[api_index]["name"]) if 0 <= api_index < len(host_apis) else "",
            )
        )
    return found


def _listing(devices: list[InputDevice]) -> str:
    if not devices:
        return "No input devices were found."
    return "Available inputs:\n" + "\n".join(d.describe() for d in devices)


def resolve_device(spec: str | int | None) -> InputDevice:
    """Find one input device: None = the default input, an index, or a case-insensitive name part.

    An exact (case-insensitive) name match wins over substring matches. No match, several matches,
    or no inputs at all raise NoInputDeviceError with the list of inputs and what to try next.
    """
    devices = list_input_devices()
    if not devices:
        raise NoInputDeviceError(f"No audio input device found (no microphone?). {HINT}")
    if spec is None:
        for device in devices:
            if device.is_default:
                return device
        return devices[0]
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for device in devices:
            if device.index == index:
                return device
        raise NoInputDeviceError(f"No input device with index {index}. {_listing(devices)}\n{HINT}")
    wanted = spec.strip().casefold()
    exact = [d for d in devices if d.name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [d for d in devices if wanted in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NoInputDeviceError(f"No input device matches {spec!r}. {_listing(devices)}\n{HINT}")
    names = "\n".join(d.describe() for d in matches)
    raise NoInputDeviceError(
        f"Input device {spec!r} is ambiguous, it matches {len(matches)} devices:\n{names}\n"
        f"Use the index or a longer part of the name. {HINT}"
    )


class MicSource:
    """A PortAudio input stream in callback mode that hands float32 blocks to `on_audio`.

    `on_audio(block, n_lost_frames)` runs on PortAudio's audio thread, once per block:
    `block` is a float32 array `(frames, channels)` that the callee owns (a copy); `n_lost_frames`
    is 0 when the block follows the previous one without a gap, and > 0 when PortAudio reported an
    input overflow before it: an estimate of the frames lost, from the stream's ADC timestamps, or
    the block length when the host API gives no timestamps. Keep `on_audio` short (copy into a
    ring buffer); if it raises, the stream is aborted and `check()` raises MicError.

    `on_status(MicStatus)` is told about overflows, a callback error, a device that vanished
    (the stream ended without `stop()`), and (from `check()`) a stream that stalled.

    The caller polls `check()` now and then (e.g. once a second): it raises MicError once the
    stream has died, and then `reopen()` may be tried, with a back-off, until it succeeds.
    """

    def __init__(
        self,
        device: InputDevice | str | int | None = None,
        sample_rate_hz: int | None = None,
        block_ms: int = 20,
        on_audio: AudioCallback | None = None,
        on_status: StatusCallback | None = None,
        channels: int = 1,
        stall_timeout_s: float = 2.0,
    ) -> None:
        self._spec = device
        self.device = device if isinstance(device, InputDevice) else resolve_device(device)
        self.sample_rate_hz = int(sample_rate_hz or self.device.default_samplerate_hz)
        if block_ms <= 0 or (self.sample_rate_hz * block_ms) % 1000:
            raise ValueError(
                f"block_ms={block_ms} is not a whole number of samples at {self.sample_rate_hz} Hz"
            )
        self.block_ms = block_ms
        self.block_frames = self.sample_rate_hz * block_ms // 1000
        if not 1 <= channels <= self.device.max_input_channels:
            raise ValueError(
                f"channels={channels} but {self.device.name!r} has {self.device.max_input_channels} input channels"
            )
        self.channels = channels
        self.on_audio = on_audio
        self.on_status = on_status
        self.stall_timeout_s = stall_timeout_s
        self._stream: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget counters and errors (the stream itself is opened by start())."""
        self.n_frames = 0  # frames delivered since start()
        self.n_lost_frames = 0  # frames estimated lost in overflows since start()
        self.n_overflows = 0
        self.error: MicError | None = None
        self._stopping = False
        self._next_adc_time_s: float | None = None
        self._last_callback_s = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the stream is open and running."""
        return self._stream is not None and bool(self._stream.active)

    def start(self) -> MicSource:
        """Open and start the stream; raises MicError with the device and the reason when it cannot."""
        if self._stream is not None:
            return self
        sd = _sounddevice()
        self.reset()
        try:
            stream = sd.InputStream(
                samplerate=self.sample_rate_hz,
                blocksize=self.block_frames,
                device=self.device.index,
                channels=self.channels,
                dtype="float32",
                callback=self._callback,
                finished_callback=self._finished,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise MicError(
                f"Cannot open input device {self.device.describe().strip()} at {self.sample_rate_hz} Hz, "
                f"{self.channels} ch: {exc}. The device may be in use or unplugged. {HINT}"
            ) from exc
        self._stream = stream
        try:
            stream.start()
        except sd.PortAudioError as exc:
            self._close_stream()
            raise MicError(f"Cannot start input device {self.device.name!r}: {exc}. {HINT}") from exc
        self._last_callback_s = time.monotonic()
        return self

    def stop(self) -> None:
        """Stop and close the stream (safe to call twice, and after the device vanished)."""
        self._stopping = True
        self._close_stream()

    def reopen(self, rescan: bool = True) -> InputDevice:
        """Close the stream, optionally rescan PortAudio's devices, find the device again and start.

        The device is looked up again by name (indices change when devices come and go), else by
        the original spec. Raises NoInputDeviceError / MicError when it is still unavailable.
        `rescan=True` re-initialises PortAudio: other open streams of this process become invalid.
        """
        self.stop()
        if rescan:
            refresh_devices()
        name = self.device.name
        matches = [d for d in list_input_devices() if d.name == name]
        if len(matches) == 1:
            self.device = matches[0]
        else:
            spec = self._spec.name if isinstance(self._spec, InputDevice) else self._spec
            self.device = resolve_device(spec)
        self.start()
        return self.device

    def check(self) -> None:
        """Raise MicError if the stream has died (device lost, aborted, stalled); no-op otherwise."""
        if self.error is not None:
            raise self.error
        if self._stream is None:
            return
        if not self._stream.active:
            raise self._fail(
                "device_lost",
                f"Input device {self.device.name!r} stopped delivering audio "
                "(stream no longer active; unplugged or taken by another program?).",
            )
        silent_s = time.monotonic() - self._last_callback_s
        if silent_s > self.stall_timeout_s:
            raise self._fail(
                "stalled",
                f"Input device {self.device.name!r} delivered no audio for "
                f"{silent_s:.1f} s (device gone or hung).",
            )

    def __enter__(self) -> MicSource:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- internals -------------------------------------------------------------------------

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        sd = _sounddevice()
        try:
            stream.abort(ignore_errors=True)
        except sd.PortAudioError:
            pass
        try:
            stream.close(ignore_errors=True)
        except sd.PortAudioError:
            pass

    def _fail(self, kind: StatusKind, message: str, cause: BaseException | None = None) -> MicError:
        """Record the first fatal error (later ones are only reported) and return it."""
        if self.error is None:
            error = MicError(f"{message} Call reopen() to retry. {HINT}")
            error.__cause__ = cause
            self.error = error
        self._report(MicStatus(kind, message, self.n_frames + self.n_lost_frames))
        return self.error

    def _report(self, status: MicStatus) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's audio thread: count, estimate losses, hand a copy of the block on."""
        self._last_callback_s = time.monotonic()
        adc_time_s = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
        n_lost = 0
        if status.input_overflow:
            n_lost = frames
            if adc_time_s > 0.0 and self._next_adc_time_s is not None:
                gap = round((adc_time_s - self._next_adc_time_s) * self.sample_rate_hz)
                if gap > 0:
                    n_lost = gap
            self.n_overflows += 1
            self.n_lost_frames += n_lost
        self._next_adc_time_s = adc_time_s + frames / self.sample_rate_hz if adc_time_s > 0.0 else None
        try:
            if n_lost:
                message = f"Input overflow on {self.device.name!r}: about {n_lost} frames lost (the consumer is too slow)."
                self._report(
                    MicStatus("input_overflow", message, self.n_frames + self.n_lost_frames - n_lost, n_lost)
                )
            if self.on_audio is not None:
                self.on_audio(indata.copy(), n_lost)
        except Exception as exc:  # a raising callback must not keep running every block: abort the stream
            self._fail("callback_error", f"on_audio/on_status raised {type(exc).__name__}: {exc}.", exc)
            raise _sounddevice().CallbackAbort from exc
        self.n_frames += frames

    def _finished(self) -> None:
        """PortAudio's thread, once the stream has ended: unexpected unless stop() asked for it."""
        if not self._stopping and self.error is None:
            self._fail(
                "device_lost",
                f"Input stream on {self.device.name!r} ended unexpectedly "
                "(device unplugged or PortAudio error).",
            )
