"""The Runtime: wires the core (resampler, ring, windower, features, VAD, batcher, smoother) for many streams.

API (what ``emostream serve``, ``live``, ``demo`` and ``replay`` build on)::

    runtime = Runtime(classifier, RuntimeConfig(hop_s=1.0))   # classifier: models.modelfile.load_classifier(...)
    runtime.start()                       # worker threads; also a context manager (start/stop)
    runtime.add_sink(sink)                # sink.publish(Estimate) -> None, called on the worker's (last) thread
    handle = runtime.open_stream("mic", sample_rate_hz=48000, channels=2, on_estimate=None, on_error=None)
    handle.push(samples, arrival_s=None)     # (frames, channels) or 1-D; int16/float32/float64
    handle.flush()                        # end of stream: final window at the last sample; waits for it
    runtime.close_stream("mic")           # idempotent; windows still queued for it are dropped
    runtime.stop()

- ``RuntimeConfig`` (frozen, ``streamer.runtime.config``): ``hop_s=1.0``, ``batching: BatchConfig``, ``vad: VadConfig``,
  ``smoother: SmootherConfig``, ``ring_s=30.0`` (audio kept per stream: about 64 KB per second of
  ring, so 256 streams x 30 s = 490 MB), ``max_streams=256``.
- ``Runtime`` attributes: ``labels`` (tuple, the model file's), ``speech_gated`` (False when the VAD is off
  or the model file says it is not about speech: every window is then classified), ``window_s``, ``hop_s``, ``model_name``,
  ``sample_rate_hz`` (the model's), ``window_samples``, ``hop_samples``, ``stats() -> RuntimeStats``.
- ``open_stream`` raises ``StreamLimitError`` beyond ``max_streams`` and ``ValueError`` for a bad or
  duplicate id, sample rate (1..384000 Hz) or channel count (1..8).
- ``StreamHandle.push`` may be called from any thread (one thread per stream at a time: pushes of a
  stream must not race each other); it only resamples (nothing held back), copies into the ring and submits the
  windows that became due, so it is cheap enough for an asyncio loop or an audio callback. It returns
  the number of windows submitted, and raises ``ValueError`` for a wrong shape or non-finite samples.
  ``arrival_s`` is the ``time.monotonic()`` at which the chunk's last sample arrived at the edge
  (default: now). ``flush(wait=True, timeout_s=30.0)`` blocks until every window of the stream has
  been published (call it off the event loop, e.g. ``asyncio.to_thread``); it returns False on
  timeout. ``dropped_samples`` (ring overwrites + ``note_dropped``), ``seq`` (windows submitted so
  far), ``stream_id``, ``sample_rate_hz``, ``channels``.
- Every window becomes one ``Estimate`` (``streamer.core.events``) delivered, on the worker thread and in
  window order per stream, to every runtime sink and then to the stream's ``on_estimate``. A sink or
  callback that raises is counted (``stats().sink_errors``) and skipped; the others still get the
  event. Sinks must not block: asyncio sinks hand over with ``loop.call_soon_threadsafe``.
  A window that fails (model backend error, audio overwritten before it was analysed) gives an
  ``ErrorEvent`` to the stream's ``on_error`` instead (codes ``inference_failed``,
  ``audio_overwritten``, ``internal``).
- ``seq`` counts windows from 0 per stream; ``t_start_s``/``t_end_s`` come from the window's absolute
  sample indices at the model rate (``t_start_s`` clamped to 0 at start-up); ``latency_ms`` is the
  publication time minus ``arrival_s`` of the window's last sample (monotonic clock).
  Windows the VAD rejects have ``speech=False``, ``label=None``, empty ``probs``/``raw_probs``
  and are not classified; the smoother holds its state over them (``Smoother.skip``).

The worker (``streamer.runtime.worker``) hands each batch of due windows from all streams to
``streamer.runtime.batch.BatchHandler``: VAD and incremental log-mel on one thread, then (with
``RuntimeConfig.pipeline``, the default) ONE ``classifier.predict``, smoothing and publication on a
second thread while the first prepares the next batch. Per-stream state and the caller's handle: ``streamer.runtime.stream``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from emostream.streamer.core.frames import IncrementalLogMel
from emostream.streamer.runtime.batch import BatchHandler
from emostream.streamer.runtime.config import RuntimeConfig, RuntimeStats, StreamLimitError
from emostream.streamer.runtime.silero import make_vad
from emostream.streamer.runtime.stream import (
    ErrorCallback,
    EstimateCallback,
    StreamGeometry,
    StreamHandle,
    StreamState,
    Window,
)
from emostream.streamer.runtime.worker import BatchWorker
from emostream.streamer.sinks.base import Sink

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier


class Runtime:
    """Many streams, one model worker (two threads by default); see the module docstring for the API."""

    def __init__(
        self,
        classifier: Classifier,
        config: RuntimeConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.classifier = classifier
        self.config = config if config is not None else RuntimeConfig()
        self.clock = clock
        fc = classifier.feature_config
        self.feature_config = fc
        self.labels: tuple[str, ...] = tuple(classifier.labels)
        self.model_name: str = str(classifier.name)
        self.sample_rate_hz: int = fc.sample_rate_hz
        self.window_samples: int = fc.window_samples
        hop = self.config.hop_s * fc.sample_rate_hz
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"hop_s={self.config.hop_s} is not a whole number of samples at {fc.sample_rate_hz} Hz"
            )
        self.hop_samples: int = round(hop)
        fc.hop_frames(self.hop_samples)  # raises unless the hop is a whole number of feature hops
        if self.hop_samples > self.window_samples:
            raise ValueError(f"hop_s={self.config.hop_s} is longer than the model's window ({fc.window_s} s)")
        self.window_s: float = fc.window_s
        self.hop_s: float = self.hop_samples / fc.sample_rate_hz
        self.ring_samples = round(self.config.ring_s * fc.sample_rate_hz)
        if self.ring_samples < self.window_samples + 2 * self.hop_samples:
            raise ValueError(
                f"ring_s={self.config.ring_s} must hold a window plus two hops "
                f"({(self.window_samples + 2 * self.hop_samples) / fc.sample_rate_hz} s)"
            )
        self.geometry = StreamGeometry(
            fc.sample_rate_hz,
            self.window_samples,
            self.hop_samples,
            self.ring_samples,
            fc,
            len(self.labels),
            self.config.smoother,
        )
        # a model that is not about speech (its file says speech: false) classifies every window
        self.speech_gated: bool = bool(classifier.spec.speech_gated) and self.config.vad.enabled
        vad_config = self.config.vad if self.speech_gated else dataclasses.replace(self.config.vad, enabled=False)
        self.vad = make_vad(vad_config, fc.sample_rate_hz, self.hop_samples)
        self._lock = threading.Lock()
        self._sinks: tuple[Sink, ...] = ()
        self._streams: dict[str, StreamState] = {}
        self.handler = BatchHandler(
            classifier, self.vad, IncrementalLogMel(fc), self.window_samples, lambda: self._sinks, clock
        )
        pipeline = self.config.pipeline
        self._worker: BatchWorker[Window] = BatchWorker(
            self.config.batching,
            self.handler.prepare if pipeline else self.handler,
            on_error=self.handler.failed,
            name="emostream-runtime",
            clock=clock,
            finish=self.handler.complete if pipeline else None,
            on_finish_error=self.handler.failed_complete if pipeline else None,
        )
        self.reset()

    def reset(self) -> None:
        """Forget streams, sinks and counters (only while stopped)."""
        self._worker.reset()
        with self._lock:
            self._sinks = ()
            self._streams = {}
        self._n_submitted = 0
        self.handler.reset()

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker.running

    def start(self) -> Runtime:
        self._worker.start()
        return self

    def stop(self, drain: bool = True) -> None:
        self._worker.stop(drain=drain)

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- sinks and streams ---------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    def open_stream(
        self,
        stream_id: str,
        sample_rate_hz: int,
        channels: int,
        on_estimate: EstimateCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> StreamHandle:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"stream_id must be a non-empty string, got {stream_id!r}")
        with self._lock:
            if stream_id in self._streams:
                raise ValueError(f"stream {stream_id!r} is already open")
            if len(self._streams) >= self.config.max_streams:
                raise StreamLimitError(
                    f"{len(self._streams)} streams are open, the limit is {self.config.max_streams}"
                )
            stream = StreamState(
                stream_id, sample_rate_hz, channels, self.geometry, self.vad, on_estimate, on_error
            )
            self._streams[stream_id] = stream
        return StreamHandle(stream, self._submit, self.clock, lambda: self.running, self.sample_rate_hz)

    def close_stream(self, stream_id: str) -> None:
        """Idempotent; windows still queued for the stream are dropped."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is not None:
            with stream.lock:
                stream.closed = True
            with stream.done:
                stream.done.notify_all()

    def observe_batches(self, callback: Callable[[int], None] | None) -> None:
        """Call ``callback(n_windows)`` on the worker thread after each batch (metrics); None: stop."""
        self._worker.on_batch = callback

    def stats(self) -> RuntimeStats:
        with self._lock:
            n_streams = len(self._streams)
        w, h = self._worker, self.handler
        return RuntimeStats(
            streams=n_streams,
            windows_submitted=self._n_submitted,
            windows_published=h.n_published,
            windows_classified=h.n_classified,
            windows_nonspeech=h.n_nonspeech,
            window_errors=h.n_errors,
            sink_errors=h.n_sink_errors,
            queued=w.queued(),
            batches=w.n_batches,
            mean_batch=w.n_items / w.n_batches if w.n_batches else 0.0,
        )

    def _submit(self, windows: list[Window]) -> None:
        if windows:
            with self._lock:
                self._n_submitted += len(windows)
            self._worker.submit_many(windows)
