"""The worker's batch handler: VAD, features, ONE model call, smoothing and publication for a batch.

Two stages (``prepare``: VAD and log-mel; ``complete``: model, smoothing, publication), which the
runtime runs on two threads (``streamer.runtime.worker``); per-stream VAD and log-mel state is only
touched by the first, the smoother by the second.

A batch holds due windows of many streams. ``BatchHandler`` splits it into rounds (each stream at
most once per round, in window order), runs the VAD batched across streams (``streamer.core.vad``),
the incremental log-mel of the speech windows (``streamer.core.frames``, batched), then ONE
``classifier.predict`` for the whole batch (``streamer.core.classify``), and publishes one
``Estimate`` per window, in window order per stream, to every sink and then to the stream's
``on_estimate``. Windows are keyed by object (``Window`` hashes by identity), never by ``id()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from emostream.streamer.core.classify import WindowJob, classify
from emostream.streamer.core.events import ErrorEvent, Estimate
from emostream.streamer.core.frames import FrameRequest, IncrementalLogMel
from emostream.streamer.core.ring import RingOverwrittenError
from emostream.streamer.core.vad import SpeechDecision, Vad, VadRequest
from emostream.streamer.runtime.stream import StreamState, Window
from emostream.streamer.sinks.base import Sink

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier

log = logging.getLogger("emostream.runtime")

Outcome = tuple[SpeechDecision, np.ndarray | None, ErrorEvent | None]
Request = TypeVar("Request", VadRequest, FrameRequest)  # audio [start_sample, end_sample) a window needs


class Prepared:
    """One batch between the two stages: its live windows, their outcomes so far, the model's jobs."""

    __slots__ = ("batch", "live", "outcome", "jobs", "job_window", "answered")

    def __init__(self, batch: list[Window]) -> None:
        self.batch = batch
        self.live: list[Window] = []
        self.outcome: dict[Window, Outcome] = {}
        self.jobs: list[WindowJob] = []
        self.job_window: list[Window] = []
        self.answered: set[Window] = set()  # windows already answered (published, error or dropped)


class BatchHandler:
    """Handles one batch of windows at a time on the worker thread; counts what it published."""

    def __init__(
        self,
        classifier: Classifier,
        vad: Vad,
        features: IncrementalLogMel,
        window_samples: int,
        sinks: Callable[[], tuple[Sink, ...]],
        clock: Callable[[], float],
    ) -> None:
        self.classifier = classifier
        self.vad = vad
        self.features = features
        self.labels: tuple[str, ...] = tuple(classifier.labels)
        self.model_name = str(classifier.name)
        self.sample_rate_hz: int = classifier.feature_config.sample_rate_hz
        self.window_samples = window_samples
        self.sinks = sinks
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.n_published = 0
        self.n_classified = 0
        self.n_nonspeech = 0
        self.n_errors = 0
        self.n_sink_errors = 0
        self._preparing: Prepared | None = None  # the batch ``prepare`` works on

    def __call__(self, batch: list[Window]) -> None:
        """Both stages on the calling thread."""
        self.complete(self.prepare(batch))

    def prepare(self, batch: list[Window]) -> Prepared:
        """First stage: drop windows of closed streams, VAD, log-mel of the speech windows."""
        p = self._preparing = Prepared(batch)
        for w in batch:
            if w.stream.closed:  # closed while queued: nobody listens any more
                p.answered.add(w)
                w.stream.finish(1)
        p.live = [w for w in batch if w not in p.answered]
        outcome = p.outcome
        for rnd in _rounds(p.live):  # each stream at most once per round, in window order
            decisions = self._speech(rnd, outcome)
            speech = [w for w, d in zip(rnd, decisions, strict=True) if d is not None and d.speech]
            for w, logmel in zip(speech, self._features(speech, outcome), strict=True):
                if logmel is not None:
                    p.jobs.append(WindowJob(w.stream.stream_id, w.seq, w.end_sample, logmel, w.arrival_s))
                    p.job_window.append(w)
            for w, d in zip(rnd, decisions, strict=True):
                if d is not None and w not in outcome:
                    outcome[w] = (d, None, None)
        return p

    def complete(self, p: Prepared) -> None:
        """Second stage: ONE model call for the prepared windows, then smoothing and publication."""
        outcome = p.outcome
        for w, result in zip(p.job_window, classify(self.classifier, p.jobs), strict=True):
            err = (
                None
                if result.ok
                else ErrorEvent(
                    "inference_failed", f"model backend failed: {result.error}", w.stream.stream_id
                )
            )
            outcome[w] = (outcome[w][0], result.probs, err)
        for w in p.live:
            self._publish(w, *outcome[w], p.answered)

    def failed(self, batch: list[Window], exc: BaseException) -> None:
        """A bug in ``prepare``: report every window of the batch not yet answered, keep the streams going."""
        p = self._preparing
        self._report(batch, p.answered if p is not None and p.batch is batch else set(), exc)

    def failed_complete(self, p: Prepared, exc: BaseException) -> None:
        """A bug in ``complete``: as ``failed``."""
        self._report(p.batch, p.answered, exc)

    def _report(self, batch: list[Window], answered: set[Window], exc: BaseException) -> None:
        log.exception("runtime batch failed", exc_info=exc)
        for w in batch:
            if w in answered:
                continue
            self.n_errors += 1
            self._call(
                w.stream.on_error, ErrorEvent("internal", f"{type(exc).__name__}: {exc}", w.stream.stream_id)
            )
            w.stream.finish(1)

    def _speech(self, rnd: list[Window], outcome: dict[Window, Outcome]) -> list[SpeechDecision | None]:
        """VAD for one round (one window per stream), batched across streams."""
        if not self.vad.config.enabled:
            return [SpeechDecision(True, 1.0, 0) for _ in rnd]
        ok, reqs, audios = self._read(
            rnd, lambda w: self.vad.request(w.stream.vad, w.end_sample, final=w.final), outcome
        )
        self.vad.process([w.stream.vad for w in ok], reqs, audios)
        done = set(ok)
        return [
            self.vad.decide(w.stream.vad, w.hop_start_sample, w.end_sample) if w in done else None
            for w in rnd
        ]

    def _features(self, windows: list[Window], outcome: dict[Window, Outcome]) -> list[np.ndarray | None]:
        """Log-mel of one round's speech windows (incremental where possible), batched."""
        ok, reqs, audios = self._read(windows, lambda w: w.stream.frames.request(w.end_sample), outcome)
        feats = self.features.compute([w.stream.frames for w in ok], reqs, audios) if ok else []
        by_window = dict(zip(ok, feats, strict=True))
        return [by_window.get(w) for w in windows]

    def _read(
        self, windows: list[Window], request: Callable[[Window], Request], outcome: dict[Window, Outcome]
    ) -> tuple[list[Window], list[Request], list[np.ndarray]]:
        """The audio each window's ``request`` names, read from its stream's ring; the windows whose
        audio was overwritten are answered with an error and left out."""
        ok: list[Window] = []
        reqs: list[Request] = []
        audios: list[np.ndarray] = []
        for w in windows:
            req = request(w)
            try:
                audio = w.stream.ring.read_range(req.start_sample, req.end_sample)
            except RingOverwrittenError as exc:
                self._overwritten(w, exc, outcome)
                continue
            ok.append(w)
            reqs.append(req)
            audios.append(audio)
        return ok, reqs, audios

    def _overwritten(self, w: Window, exc: Exception, outcome: dict[Window, Outcome]) -> None:
        """The worker fell more than ``ring_s`` behind: this window's audio is gone; resynchronise."""
        s = w.stream
        s.frames.reset()
        c = self.vad.chunk_samples
        s.vad.reset()
        s.vad.next_sample = -(-max(s.ring.oldest_sample, w.end_sample) // c) * c
        message = f"audio of window {w.seq} was overwritten before it was analysed (worker behind): {exc}"
        outcome[w] = (
            SpeechDecision(False, 0.0, 0),
            None,
            ErrorEvent("audio_overwritten", message, s.stream_id),
        )

    def _publish(
        self,
        w: Window,
        decision: SpeechDecision,
        probs: np.ndarray | None,
        error: ErrorEvent | None,
        answered: set[Window],
    ) -> None:
        s: StreamState = w.stream
        try:
            s.ring.mark_read(w.end_sample)
            if error is not None:
                self.n_errors += 1
                self._call(s.on_error, error)
                return
            labels = self.labels
            if decision.speech and probs is not None:
                state = s.smoother.update(probs)
                self.n_classified += 1
                label: str | None = labels[state.label_index]
                confidence = state.confidence
                smoothed = dict(zip(labels, state.smoothed.tolist(), strict=True))
                raw = dict(zip(labels, state.raw.tolist(), strict=True))
            else:
                s.smoother.skip()
                self.n_nonspeech += 1
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
            self.n_published += 1
            for sink in self.sinks():
                self._call(sink.publish, event)
            self._call(s.on_estimate, event)
        finally:
            answered.add(w)
            s.finish(1)

    def _call(self, fn: Callable[[Any], None] | None, event: Any) -> None:
        """A sink or callback that raises is counted and skipped; the others still get the event."""
        if fn is None:
            return
        try:
            fn(event)
        except Exception:
            self.n_sink_errors += 1
            if self.n_sink_errors <= 3:
                log.exception("a sink or callback raised; it is skipped for this event")


def _rounds(windows: list[Window]) -> list[list[Window]]:
    """Split a batch so that each round holds at most one window per stream, keeping each stream's order."""
    rounds: list[list[Window]] = []
    count: dict[StreamState, int] = {}
    for w in windows:
        r = count.get(w.stream, 0)
        count[w.stream] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(w)
    return rounds
