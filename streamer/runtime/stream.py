"""One stream inside the runtime: its state (``StreamState``), its due windows (``Window``) and the caller's ``StreamHandle``.

Push side (any thread, one at a time per stream, under ``StreamState.lock``): resample, copy into
the ring, count samples in the windower, submit the windows that became due. Worker side (the
runtime's worker thread): incremental frames, VAD state, smoother.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emostream.models.features import FeatureConfig
from emostream.streamer.core.events import ErrorEvent, Estimate
from emostream.streamer.core.frames import StreamFrames
from emostream.streamer.core.resample import INT16_SCALE, StreamResampler
from emostream.streamer.core.ring import RingBuffer
from emostream.streamer.core.smoother import Smoother, SmootherConfig
from emostream.streamer.core.vad import Vad
from emostream.streamer.core.windower import Windower

EstimateCallback = Callable[[Estimate], None]
ErrorCallback = Callable[[ErrorEvent], None]


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """One due window of one stream, on its way to the worker (compared and hashed by identity)."""

    stream: StreamState
    seq: int
    end_sample: int
    hop_start_sample: int  # previous window's end: the VAD decides on (hop_start_sample, end_sample]
    arrival_s: float
    final: bool  # the stream's last window: the VAD zero-pads its partial last chunk


@dataclass(frozen=True, slots=True)
class StreamGeometry:
    """What every stream of one runtime shares: the model's rate, window, hop, ring size, features."""

    sample_rate_hz: int
    window_samples: int
    hop_samples: int
    ring_samples: int
    feature_config: FeatureConfig
    n_labels: int
    smoother: SmootherConfig


class StreamState:
    """Per-stream state. Push side: resampler, ring, windower (under ``lock``); worker side: frames, VAD, smoother."""

    def __init__(
        self,
        stream_id: str,
        sample_rate_hz: int,
        channels: int,
        geometry: StreamGeometry,
        vad: Vad,
        on_estimate: EstimateCallback | None,
        on_error: ErrorCallback | None,
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.on_estimate = on_estimate
        self.on_error = on_error
        g = geometry
        self.resampler = StreamResampler(sample_rate_hz, g.sample_rate_hz, channels)
        self.int16_direct = channels == 1 and self.resampler.identity  # push's fast path for 16-bit PCM
        self.ring = RingBuffer(g.ring_samples)
        self.windower = Windower(g.window_samples, g.hop_samples)
        self.frames = StreamFrames(g.feature_config)
        self.vad = vad.new_state()
        self.smoother = Smoother(g.n_labels, g.smoother)
        self.lock = threading.Lock()
        self.done = threading.Condition()
        self.reset()

    def reset(self) -> None:
        self.resampler.reset()
        self.ring.reset()
        self.windower.reset()
        self.frames.reset()
        self.vad.reset()
        self.smoother.reset()
        self.seq = 0
        self.last_end_sample = 0
        self.pending = 0
        self.closed = False
        self.flushed = False
        self.noted_dropped = 0

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped_samples + self.noted_dropped

    def finish(self, n: int) -> None:
        with self.done:
            self.pending -= n
            self.done.notify_all()


class StreamHandle:
    """The caller's side of one stream: ``push`` audio, ``flush`` at the end.

    ``submit`` hands due windows to the runtime's worker; ``clock`` is the runtime's monotonic
    clock; ``running`` tells whether the worker still runs; ``model_rate_hz`` is the model's rate.
    """

    def __init__(
        self,
        stream: StreamState,
        submit: Callable[[list[Window]], None],
        clock: Callable[[], float],
        running: Callable[[], bool],
        model_rate_hz: int,
    ) -> None:
        self._stream = stream
        self._submit = submit
        self._clock = clock
        self._running = running
        self._model_rate_hz = model_rate_hz

    @property
    def stream_id(self) -> str:
        return self._stream.stream_id

    @property
    def sample_rate_hz(self) -> int:
        return self._stream.sample_rate_hz

    @property
    def channels(self) -> int:
        return self._stream.channels

    @property
    def seq(self) -> int:
        """Windows submitted so far (the next window's ``seq``)."""
        return self._stream.seq

    @property
    def dropped_samples(self) -> int:
        return self._stream.dropped_samples

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def note_dropped(self, n_input_frames: int) -> None:
        """Count audio lost before it reached ``push`` (e.g. a microphone overflow), in input frames."""
        s = self._stream
        s.noted_dropped += round(n_input_frames * self._model_rate_hz / s.sample_rate_hz)

    def push(self, samples: np.ndarray, arrival_s: float | None = None) -> int:
        """Resample, store and submit the windows that became due; returns how many.

        ``arrival_s``: the monotonic time the chunk's last sample arrived at the edge (default now).
        """
        arrival_s = self._clock() if arrival_s is None else float(arrival_s)
        samples = np.asarray(samples)
        s = self._stream
        with s.lock:
            if s.closed or s.flushed:
                raise RuntimeError(f"stream {s.stream_id!r} is {'closed' if s.closed else 'flushed'}")
            if s.int16_direct and samples.dtype.itemsize == 2 and samples.dtype.kind == "i" and (
                samples.ndim == 1 or (samples.ndim == 2 and samples.shape[1] == 1)
            ):  # 16-bit mono at the model's rate: scaled straight into the ring, no float copy first
                n = samples.size
                s.ring.push(samples.reshape(-1), scale=INT16_SCALE)
            else:
                mono = s.resampler.process(samples)
                if samples.dtype.kind != "i" and not np.all(np.isfinite(mono)):  # integers always are
                    raise ValueError("audio contains NaN or infinite samples")
                s.ring.push(mono)
                n = len(mono)
            ends = s.windower.push(n)
            if not ends:  # most pushes: no window became due
                return 0
            windows = self._windows(ends, arrival_s, final=False)
        self._submit(windows)
        return len(windows)

    def frames_until_due(self) -> int:
        """Input frames the caller may hold back without delaying a window; 0: push every chunk.

        A 16-bit mono chunk at the model's rate of fewer frames than this makes no window due, so
        the WebSocket ingest gathers its 20-ms messages and pushes them once per window, with the
        message that completes it (same audio, same windows, same ``arrival_s``). Resampled or
        multichannel input returns 0.
        """
        s = self._stream
        if not s.int16_direct or s.flushed:
            return 0
        w = s.windower
        return w.next_end_sample - w.total_samples

    def flush(self, wait: bool = True, timeout_s: float | None = 30.0) -> bool:
        """End of stream: the resampler's tail and the final window at the last sample.

        With ``wait``, blocks until every window of the stream is published; False on timeout or
        when the runtime is not running.
        """
        s = self._stream
        with s.lock:
            if s.closed:
                return True
            if not s.flushed:
                s.flushed = True
                tail = s.resampler.flush()
                s.ring.push(tail)
                ends = s.windower.push(len(tail)) + s.windower.flush()
                windows = self._windows(ends, self._clock(), final=True)
            else:
                windows = []
        self._submit(windows)
        return self.wait_idle(timeout_s) if wait else True

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until every window submitted so far has been published (or the stream closed)."""
        s = self._stream
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with s.done:
            while s.pending > 0 and not s.closed:
                if not self._running():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                s.done.wait(0.1 if left is None else min(left, 0.1))
            return True

    def _windows(self, ends: list[int], arrival_s: float, final: bool) -> list[Window]:
        s = self._stream
        out = []
        for i, end in enumerate(ends):
            out.append(Window(s, s.seq, end, s.last_end_sample, arrival_s, final and i == len(ends) - 1))
            s.seq += 1
            s.last_end_sample = end
        if out:
            with s.done:
                s.pending += len(out)
        return out
