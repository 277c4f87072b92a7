"""The Runtime: wires resampler, ring, windower, incremental features, VAD, engine and smoother for many streams.

API (what ``emostream serve``, ``live``, ``demo`` and ``replay`` build on)::

    runtime = Runtime(classifier, RuntimeConfig(hop_s=1.0))   # classifier: models.modelfile.load_classifier(...)
    runtime.start()                       # one worker thread; also a context manager (start/stop)
    runtime.add_sink(sink)                # sink.publish(Estimate) -> None, called on the worker thread
    handle = runtime.open_stream("mic", sample_rate_hz=48000, channels=2, on_estimate=None, on_error=None)
    handle.push(samples, arrival_time=None)   # (frames, channels) or 1-D; int16/float32/float64
    handle.flush()                        # end of stream: final window at the last sample; waits for it
    runtime.close_stream("mic")           # idempotent; windows still queued for it are dropped
    runtime.stop()

- ``RuntimeConfig`` (frozen): ``hop_s=1.0``, ``engine: EngineConfig``, ``vad: VadConfig``,
  ``smoother: SmootherConfig``, ``ring_s=30.0`` (audio kept per stream: about 64 KB per second of
  ring, so 256 streams x 30 s = 490 MB), ``max_streams=256``.
- ``Runtime`` attributes: ``labels`` (tuple), ``window_s``, ``hop_s``, ``model_name``,
  ``sample_rate_hz`` (the model's), ``window_samples``, ``hop_samples``, ``stats() -> RuntimeStats``.
- ``open_stream`` raises ``StreamLimitError`` beyond ``max_streams`` and ``ValueError`` for a bad or
  duplicate id, sample rate (1..384000 Hz) or channel count (1..8).
- ``StreamHandle.push`` may be called from any thread (one thread per stream at a time: pushes of a
  stream must not race each other); it only resamples (soxr), copies into the ring and submits the
  windows that became due, so it is cheap enough for an asyncio loop or an audio callback. It returns
  the number of windows submitted, and raises ``ValueError`` for a wrong shape or non-finite samples.
  ``arrival_time`` is the ``time.monotonic()`` at which the chunk's last sample arrived at the edge
  (default: now). ``flush(wait=True, timeout_s=30.0)`` blocks until every window of the stream has
  been published (call it off the event loop, e.g. ``asyncio.to_thread``); it returns False on
  timeout. ``dropped_samples`` (ring overwrites + ``note_dropped``), ``seq`` (windows submitted so
  far), ``stream_id``, ``sample_rate_hz``, ``channels``.
- Every window becomes one ``Estimate`` (``streamer.events``) delivered, on the worker thread and in
  window order per stream, to every runtime sink and then to the stream's ``on_estimate``. A sink or
  callback that raises is counted (``stats().sink_errors``) and skipped; the others still get the
  event. Sinks must not block: asyncio sinks hand over with ``loop.call_soon_threadsafe``.
  A window that fails (model backend error, audio overwritten before it was analysed) gives an
  ``ErrorEvent`` to the stream's ``on_error`` instead (codes ``inference_failed``,
  ``audio_overwritten``, ``internal``).
- ``seq`` counts windows from 0 per stream; ``t_start_s``/``t_end_s`` come from the window's absolute
  sample indices at the model rate (``t_start_s`` clamped to 0 at start-up); ``latency_ms`` is the
  publication time minus ``arrival_time`` of the window's last sample (monotonic clock).
  Windows the VAD rejects have ``speech=False``, ``label=None``, empty ``probs``/``raw_probs``
  and are not classified; the smoother holds its state over them (``Smoother.skip``).

The worker thread handles a batch of due windows from all streams: VAD (silero batched across
streams), incremental log-mel for the speech windows (``streamer.frames``, batched), ONE
``classifier.predict`` (``streamer.engine.classify``), then smoothing and publication. The offline
helpers at the bottom (``offline_window_probs``, ``replay_file``) are what the tests compare
streaming against.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.features import LogMel
from models.windows import stream_windows
from streamer.engine import BatchWorker, EngineConfig, WindowJob, classify
from streamer.events import ErrorEvent, Estimate
from streamer.frames import IncrementalLogMel, StreamFrames
from streamer.resample import StreamResampler
from streamer.ring import RingBuffer, RingOverwrittenError
from streamer.smoother import Smoother, SmootherConfig
from streamer.vad import SpeechDecision, Vad, VadConfig, VadState
from streamer.windower import Windower

log = logging.getLogger("emostream.pipeline")

EstimateCallback = Callable[[Estimate], None]
ErrorCallback = Callable[[ErrorEvent], None]


class StreamLimitError(RuntimeError):
    """``open_stream`` beyond ``RuntimeConfig.max_streams``."""


class Sink(Protocol):
    """Where estimates go (dashboard, JSON lines, WebSocket hub). Called on the worker thread: never block."""

    def publish(self, event: Estimate) -> None: ...


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    hop_s: float = 1.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    ring_s: float = 30.0
    max_streams: int = 256

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")
        if not (math.isfinite(self.ring_s) and self.ring_s > 0):
            raise ValueError(f"ring_s must be positive, got {self.ring_s}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    streams: int
    windows_submitted: int
    windows_published: int
    windows_classified: int
    windows_nonspeech: int
    window_errors: int
    sink_errors: int
    queued: int
    batches: int
    mean_batch: float


@dataclass(frozen=True, slots=True)
class _Window:
    """One due window of one stream, on its way to the worker."""

    stream: _Stream
    seq: int
    end_sample: int
    hop_start: int  # previous window's end: the VAD decides on (hop_start, end_sample]
    arrival_s: float
    final: bool  # the stream's last window: the VAD zero-pads its partial last chunk


class _Stream:
    """Per-stream state. Push side: resampler, windower (under ``lock``); worker side: frames, VAD, smoother."""

    def __init__(
        self,
        runtime: Runtime,
        stream_id: str,
        sample_rate_hz: int,
        channels: int,
        on_estimate: EstimateCallback | None,
        on_error: ErrorCallback | None,
    ) -> None:
        self.stream_id = stream_id
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.on_estimate = on_estimate
        self.on_error = on_error
        self.resampler = StreamResampler(sample_rate_hz, runtime.sample_rate_hz, channels)
        self.ring = RingBuffer(runtime.ring_samples)
        self.windower = Windower(runtime.window_samples, runtime.hop_samples)
        self.frames = StreamFrames(runtime.feature_config)
        self.vad: VadState = runtime.vad.new_state()
        self.smoother = Smoother(len(runtime.labels), runtime.config.smoother)
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
        self.last_end = 0
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
    """The caller's side of one stream: ``push`` audio, ``flush`` at the end."""

    def __init__(self, runtime: Runtime, stream: _Stream) -> None:
        self._runtime = runtime
        self._stream = stream

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
        s.noted_dropped += round(n_input_frames * self._runtime.sample_rate_hz / s.sample_rate_hz)

    def push(self, samples: np.ndarray, arrival_time: float | None = None) -> int:
        arrival_s = self._runtime.clock() if arrival_time is None else float(arrival_time)
        samples = np.asarray(samples)
        s = self._stream
        with s.lock:
            if s.closed or s.flushed:
                raise RuntimeError(f"stream {s.stream_id!r} is {'closed' if s.closed else 'flushed'}")
            mono = s.resampler.process(samples)
            if samples.dtype.kind != "i" and not np.all(np.isfinite(mono)):  # integers always are
                raise ValueError("audio contains NaN or infinite samples")
            s.ring.push(mono)
            windows = self._windows(s.windower.push(len(mono)), arrival_s, final=False)
        self._runtime._submit(windows)
        return len(windows)

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
                windows = self._windows(ends, self._runtime.clock(), final=True)
            else:
                windows = []
        self._runtime._submit(windows)
        return self.wait_idle(timeout_s) if wait else True

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until every window submitted so far has been published (or the stream closed)."""
        s = self._stream
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with s.done:
            while s.pending > 0 and not s.closed:
                if not self._runtime.running:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                s.done.wait(0.1 if left is None else min(left, 0.1))
            return True

    def _windows(self, ends: list[int], arrival_s: float, final: bool) -> list[_Window]:
        s = self._stream
        out = []
        for i, end in enumerate(ends):
            out.append(_Window(s, s.seq, end, s.last_end, arrival_s, final and i == len(ends) - 1))
            s.seq += 1
            s.last_end = end
        if out:
            with s.done:
                s.pending += len(out)
        return out


class Runtime:
    """Many streams, one model worker thread; see the module docstring for the API."""

    def __init__(
        self,
        classifier: Any,
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
        self.vad = Vad(self.config.vad, fc.sample_rate_hz, self.hop_samples)
        self.features = IncrementalLogMel(fc)
        self._lock = threading.Lock()
        self._sinks: tuple[Sink, ...] = ()
        self._streams: dict[str, _Stream] = {}
        self._worker: BatchWorker[_Window] = BatchWorker(
            self.config.engine,
            self._process,
            on_error=self._batch_failed,
            name="emostream-runtime",
            clock=clock,
        )
        self.reset()

    def reset(self) -> None:
        """Forget streams, sinks and counters (only while stopped)."""
        self._worker.reset()
        with self._lock:
            self._sinks = ()
            self._streams = {}
        self._n_submitted = 0
        self._n_published = 0
        self._n_classified = 0
        self._n_nonspeech = 0
        self._n_errors = 0
        self._n_sink_errors = 0
        self._finished_in_batch: set[int] = set()  # windows of the running batch already answered

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
            stream = _Stream(self, stream_id, sample_rate_hz, channels, on_estimate, on_error)
            self._streams[stream_id] = stream
        return StreamHandle(self, stream)

    def close_stream(self, stream_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is not None:
            with stream.lock:
                stream.closed = True
            with stream.done:
                stream.done.notify_all()

    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def stats(self) -> RuntimeStats:
        with self._lock:
            n_streams = len(self._streams)
        w = self._worker
        return RuntimeStats(
            streams=n_streams,
            windows_submitted=self._n_submitted,
            windows_published=self._n_published,
            windows_classified=self._n_classified,
            windows_nonspeech=self._n_nonspeech,
            window_errors=self._n_errors,
            sink_errors=self._n_sink_errors,
            queued=w.queued(),
            batches=w.n_batches,
            mean_batch=w.n_items / w.n_batches if w.n_batches else 0.0,
        )

    def _submit(self, windows: list[_Window]) -> None:
        if windows:
            with self._lock:
                self._n_submitted += len(windows)
            self._worker.submit_many(windows)

    # ---- the worker thread -------------------------------------------------------------------

    def _process(self, batch: list[_Window]) -> None:
        self._finished_in_batch = set()
        for w in batch:
            if w.stream.closed:  # closed while queued: nobody listens any more
                self._finished_in_batch.add(id(w))
                w.stream.finish(1)
        live = [w for w in batch if id(w) not in self._finished_in_batch]
        outcome: dict[int, tuple[SpeechDecision, np.ndarray | None, ErrorEvent | None]] = {}
        jobs: list[WindowJob] = []
        job_window: list[_Window] = []
        for rnd in _rounds(live):  # each stream at most once per round, in window order
            decisions = self._speech(rnd, outcome)
            speech = [w for w, d in zip(rnd, decisions, strict=True) if d is not None and d.speech]
            for w, logmel in zip(speech, self._features(speech, outcome), strict=True):
                if logmel is not None:
                    jobs.append(WindowJob(w.stream.stream_id, w.seq, w.end_sample, logmel, w.arrival_s))
                    job_window.append(w)
            for w, d in zip(rnd, decisions, strict=True):
                if d is not None and id(w) not in outcome:
                    outcome[id(w)] = (d, None, None)
        for w, result in zip(job_window, classify(self.classifier, jobs), strict=True):
            d = outcome[id(w)][0]
            err = (
                None
                if result.ok
                else ErrorEvent(
                    "inference_failed", f"model backend failed: {result.error}", w.stream.stream_id
                )
            )
            outcome[id(w)] = (d, result.probs, err)
        for w in live:
            self._publish(w, *outcome[id(w)])

    def _speech(self, rnd: list[_Window], outcome: dict) -> list[SpeechDecision | None]:
        """VAD for one round (one window per stream), batched across streams."""
        if not self.config.vad.enabled:
            return [SpeechDecision(True, 1.0, 0) for _ in rnd]
        ok: list[_Window] = []
        reqs, audios = [], []
        for w in rnd:
            s = w.stream
            req = self.vad.request(s.vad, w.end_sample, final=w.final)
            try:
                audio = s.ring.read_range(req.start_sample, req.end_sample)
            except RingOverwrittenError as exc:
                self._overwritten(w, exc, outcome)
                continue
            ok.append(w)
            reqs.append(req)
            audios.append(audio)
        self.vad.process([w.stream.vad for w in ok], reqs, audios)
        done = {id(w) for w in ok}
        return [
            self.vad.decide(w.stream.vad, w.hop_start, w.end_sample) if id(w) in done else None for w in rnd
        ]

    def _features(self, windows: list[_Window], outcome: dict) -> list[np.ndarray | None]:
        """Log-mel of one round's speech windows (incremental where possible), batched."""
        ok, reqs, audios = [], [], []
        for w in windows:
            s = w.stream
            req = s.frames.request(w.end_sample)
            try:
                audio = s.ring.read_range(req.start_sample, req.end_sample)
            except RingOverwrittenError as exc:
                self._overwritten(w, exc, outcome)
                continue
            ok.append(w)
            reqs.append(req)
            audios.append(audio)
        feats = self.features.compute([w.stream.frames for w in ok], reqs, audios) if ok else []
        by_id = {id(w): f for w, f in zip(ok, feats, strict=True)}
        return [by_id.get(id(w)) for w in windows]

    def _overwritten(self, w: _Window, exc: Exception, outcome: dict) -> None:
        """The worker fell more than ``ring_s`` behind: this window's audio is gone; resynchronise."""
        s = w.stream
        s.frames.reset()
        c = self.vad.chunk_samples
        s.vad.reset()
        s.vad.next_sample = -(-max(s.ring.oldest_sample, w.end_sample) // c) * c
        message = f"audio of window {w.seq} was overwritten before it was analysed (worker behind): {exc}"
        outcome[id(w)] = (
            SpeechDecision(False, 0.0, 0),
            None,
            ErrorEvent("audio_overwritten", message, s.stream_id),
        )

    def _publish(
        self, w: _Window, decision: SpeechDecision, probs: np.ndarray | None, error: ErrorEvent | None
    ) -> None:
        s = w.stream
        try:
            s.ring.mark_read(w.end_sample)
            if error is not None:
                self._n_errors += 1
                _call(s.on_error, error, self)
                return
            labels = self.labels
            if decision.speech and probs is not None:
                state = s.smoother.update(probs)
                self._n_classified += 1
                label: str | None = labels[state.label_index]
                confidence = state.confidence
                smoothed = {k: float(v) for k, v in zip(labels, state.smoothed, strict=True)}
                raw = {k: float(v) for k, v in zip(labels, state.raw, strict=True)}
            else:
                s.smoother.skip()
                self._n_nonspeech += 1
                label, confidence, smoothed, raw = None, 0.0, {}, {}
            sr = self.sample_rate_hz
            event = Estimate(
                stream=s.stream_id,
                seq=w.seq,
                t_start_s=max(0, w.end_sample - self.window_samples) / sr,
                t_end_s=w.end_sample / sr,
                label=label,
                confidence=confidence,
                probs=smoothed,
                raw_probs=raw,
                speech=bool(decision.speech and probs is not None),
                speech_prob=decision.speech_prob,
                latency_ms=max(0.0, (self.clock() - w.arrival_s) * 1000.0),
                model=self.model_name,
                dropped_samples=s.dropped_samples,
            )
            self._n_published += 1
            for sink in self._sinks:
                _call(sink.publish, event, self)
            _call(s.on_estimate, event, self)
        finally:
            self._finished_in_batch.add(id(w))
            s.finish(1)

    def _batch_failed(self, batch: list[_Window], exc: BaseException) -> None:
        """A bug in the batch handler: report every window of the batch, keep the streams going."""
        log.exception("runtime batch failed", exc_info=exc)
        for w in batch:
            if id(w) in self._finished_in_batch:
                continue
            self._n_errors += 1
            _call(
                w.stream.on_error,
                ErrorEvent("internal", f"{type(exc).__name__}: {exc}", w.stream.stream_id),
                self,
            )
            w.stream.finish(1)


def _rounds(windows: list[_Window]) -> list[list[_Window]]:
    """Split a batch so that each round holds at most one window per stream, keeping each stream's order."""
    rounds: list[list[_Window]] = []
    count: dict[int, int] = {}
    for w in windows:
        r = count.get(id(w.stream), 0)
        count[id(w.stream)] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(w)
    return rounds


def _call(fn: Callable[[Any], None] | None, event: Any, runtime: Runtime) -> None:
    if fn is None:
        return
    try:
        fn(event)
    except Exception:
        runtime._n_sink_errors += 1
        if runtime._n_sink_errors <= 3:
            log.exception("a sink or callback raised; it is skipped for this event")


# ---- offline reference and file replay --------------------------------------------------------------


@torch.inference_mode()
def offline_window_probs(audio: np.ndarray, classifier: Any, hop_samples: int, batch: int = 32) -> np.ndarray:
    """Whole-recording reference, no streaming: ``stream_windows`` + ``LogMel`` + ``predict`` -> (n_windows, n_classes).

    ``audio`` is mono at the model's rate.
    """
    fc = classifier.feature_config
    _, windows = stream_windows(np.asarray(audio, dtype=np.float32), fc.window_samples, hop_samples)
    logmel = LogMel(fc).eval()
    out = [np.zeros((0, len(classifier.labels)), dtype=np.float32)]
    for i in range(0, len(windows), batch):
        feats = logmel(torch.from_numpy(windows[i : i + batch])).numpy()
        out.append(np.asarray(classifier.predict(feats), dtype=np.float32))
    return np.concatenate(out)


def replay_file(
    path: Path | str,
    classifier: Any,
    config: RuntimeConfig | None = None,
    realtime: bool = False,
    speed: float = 1.0,
    block_ms: int = 20,
    stream_id: str | None = None,
) -> Iterator[Estimate]:
    """Stream a sound file through a fresh Runtime and yield its estimates in order.

    As fast as possible by default; ``realtime`` paces the blocks at ``speed`` x real time.
    Errors of windows (e.g. a backend failure) are raised as ``RuntimeError`` after the estimates
    that came before them.
    """
    from streamer.filesource import FileSource

    source = FileSource(path, block_ms=block_ms, realtime=realtime, speed=speed)
    events: queue.SimpleQueue[Estimate | ErrorEvent] = queue.SimpleQueue()
    runtime = Runtime(classifier, config)
    runtime.start()
    try:
        handle = runtime.open_stream(
            stream_id or Path(path).name,
            source.sample_rate_hz,
            source.channels,
            on_estimate=events.put,
            on_error=events.put,
        )
        for block, arrival_s in source.blocks():
            handle.push(block, arrival_time=arrival_s)
            yield from _drain(events)
        if not handle.flush(wait=True, timeout_s=None):
            raise RuntimeError("the runtime stopped before the stream was flushed")
        yield from _drain(events)
    finally:
        runtime.stop(drain=False)


def _drain(events: queue.SimpleQueue[Estimate | ErrorEvent]) -> Iterator[Estimate]:
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if isinstance(event, ErrorEvent):
            raise RuntimeError(f"{event.code}: {event.message}")
        yield event
