"""Speech gating per window: silero-vad (ONNX, stateful per stream, batched across streams) or an energy gate.

The stream is cut into VAD chunks on a fixed grid of absolute sample indices (chunk ``k`` is
``[k * chunk_samples, (k + 1) * chunk_samples)``; 512 samples at 16 kHz, 256 at 8 kHz, silero's
sizes). Each chunk gets a speech probability: silero's output, or for the energy gate
``sigmoid((rms_dbfs - energy_threshold_dbfs) / ENERGY_SLOPE_DB)`` (0.5 exactly at the threshold).

**Window decision** (the one rule, here): a window's ``speech_prob`` is the FRACTION of the VAD
chunks that end inside its last hop ``(end - hop, end]`` whose probability is ``>= threshold``; the
window is speech when ``speech_prob >= min_speech_ratio``. A fraction rather than the max: one
click or breath in a silent second must not wake the classifier, while a word of 200 ms in a 1 s
hop (the default ratio 0.2) does. A hop with no chunk ending in it (hop shorter than a chunk)
reuses the newest chunk's decision. At the end of a stream the partial last chunk is zero-padded.

**Cost** (measured on this project's 2-core shared CI VM, onnxruntime 1.31, one intra-op thread; CPU
per stream per 1 s hop): silero 6-15 ms for a stream run alone (190-350 us per chunk) and 2.5-4.5 ms
when 64-200 streams are batched (70-150 us per chunk: a recurrent model batches across streams, not
across time), i.e. 0.5-0.9 of a core for 200 streams; the energy gate about 0.1 ms. ``Vad.process``
therefore runs all streams of a batch in lockstep, one ONNX call per chunk position; for
more than about 50 streams on two cores, use ``method="energy"`` (table in docs/protocol.md).

No I/O, no clock: the caller (``streamer.runtime``) reads the audio each state asks for and passes
the silero session in (``streamer.runtime.silero`` loads it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

VAD_METHODS = ("silero", "energy")
SILERO_CHUNK_SAMPLES = {16000: 512, 8000: 256}
SILERO_CONTEXT_SAMPLES = {16000: 64, 8000: 32}
SILERO_STATE_SHAPE = (2, 128)  # per stream; the model takes (2, B, 128)
ENERGY_SLOPE_DB = 3.0
ENERGY_CHUNK_S = 0.032  # energy-gate chunk length at rates silero does not support


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Speech gating settings; with ``enabled=False`` every window is speech (``speech_prob`` 1)."""

    enabled: bool = True
    method: str = "silero"
    threshold: float = 0.5  # a chunk is speech when its probability is >= threshold
    min_speech_ratio: float = 0.2  # a window is speech when >= this fraction of its last hop's chunks are
    energy_threshold_dbfs: float = -45.0  # energy gate: chunk RMS level with probability 0.5

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ValueError(f"VAD method must be one of {VAD_METHODS}, got {self.method!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.min_speech_ratio <= 1.0:
            raise ValueError(f"min_speech_ratio must be in (0, 1], got {self.min_speech_ratio}")
        if not math.isfinite(self.energy_threshold_dbfs) or self.energy_threshold_dbfs >= 0:
            raise ValueError(f"energy_threshold_dbfs must be negative, got {self.energy_threshold_dbfs}")


@dataclass(frozen=True, slots=True)
class SpeechDecision:
    """The gate's verdict on one window."""

    speech: bool
    speech_prob: float  # fraction of the hop's chunks that are speech
    n_chunks: int  # chunks that ended in the hop


class VadState:
    """One stream's VAD state: the silero recurrent state and context, and its recent chunk results."""

    def __init__(self, chunk_samples: int, context_samples: int, history_chunks: int) -> None:
        self.chunk_samples = chunk_samples
        self.state = np.zeros(SILERO_STATE_SHAPE, dtype=np.float32)
        self.context = np.zeros(context_samples, dtype=np.float32)
        self._ends = np.zeros(history_chunks, dtype=np.int64)  # ring of chunk end samples
        self._probs = np.zeros(history_chunks, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self.state.fill(0.0)
        self.context.fill(0.0)
        self._ends.fill(-1)
        self._probs.fill(0.0)
        self._n_chunks = 0
        self.next_sample = 0  # start of the next chunk to process
        self.finished = False

    def record(self, end_sample: int, prob: float) -> None:
        i = self._n_chunks % len(self._ends)
        self._ends[i] = end_sample
        self._probs[i] = prob
        self._n_chunks += 1
        self.next_sample = end_sample

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The remembered chunks, oldest first: (end samples, probabilities)."""
        k = min(self._n_chunks, len(self._ends))
        idx = (np.arange(self._n_chunks - k, self._n_chunks)) % len(self._ends)
        return self._ends[idx].copy(), self._probs[idx].copy()

    def decide(self, hop_start: int, end: int, threshold: float, min_ratio: float) -> SpeechDecision:
        inside = (self._ends > hop_start) & (self._ends <= end)
        n = int(inside.sum())
        if n == 0:
            if self._n_chunks == 0:
                return SpeechDecision(False, 0.0, 0)
            newest = (self._n_chunks - 1) % len(self._ends)
            ratio = float(self._probs[newest] >= threshold)
        else:
            ratio = float((self._probs[inside] >= threshold).sum()) / n
        return SpeechDecision(ratio >= min_ratio, ratio, n)


@dataclass(frozen=True, slots=True)
class VadRequest:
    """Audio a stream's VAD needs next: ``[start_sample, end_sample)``, whole chunks (zero-padded when final)."""

    start_sample: int
    end_sample: int
    final: bool


class Vad:
    """Per-window speech decisions for many streams; silero runs batched across streams."""

    def __init__(self, config: VadConfig, sample_rate_hz: int, hop_samples: int, session: Any = None) -> None:
        """``session``: the silero ONNX Runtime session (``streamer.runtime.silero.make_vad`` loads it);
        needed when the silero gate is enabled, ignored otherwise."""
        self.config = config
        self.sample_rate_hz = sample_rate_hz
        self.hop_samples = hop_samples
        self.method = config.method
        if self.method == "silero":
            if sample_rate_hz not in SILERO_CHUNK_SAMPLES:
                raise ValueError(
                    f"silero-vad works at 8000 or 16000 Hz, the model runs at {sample_rate_hz} Hz; "
                    "use the energy gate (VadConfig(method='energy'), --vad energy) or --no-vad"
                )
            self.chunk_samples = SILERO_CHUNK_SAMPLES[sample_rate_hz]
            self.context_samples = SILERO_CONTEXT_SAMPLES[sample_rate_hz]
        else:
            self.chunk_samples = max(1, round(ENERGY_CHUNK_S * sample_rate_hz))
            self.context_samples = 0
        self.history_chunks = hop_samples // self.chunk_samples + 3
        self._session: Any = None
        if config.enabled and self.method == "silero":
            if session is None:
                raise ValueError("the silero gate needs its ONNX session (streamer.runtime.silero.make_vad)")
            self._session = session

    def new_state(self) -> VadState:
        return VadState(self.chunk_samples, self.context_samples, self.history_chunks)

    def request(self, state: VadState, end_sample: int, final: bool = False) -> VadRequest:
        """The audio to pass to ``process`` for a window ending at ``end_sample``."""
        c = self.chunk_samples
        stop = end_sample if final else (end_sample // c) * c
        return VadRequest(state.next_sample, max(state.next_sample, stop), final)

    def process(
        self, states: Sequence[VadState], requests: Sequence[VadRequest], audios: Sequence[np.ndarray]
    ) -> None:
        """Run the chunks of each request (one per stream), all streams in lockstep."""
        c = self.chunk_samples
        chunked: list[np.ndarray] = []
        for state, req, audio in zip(states, requests, audios, strict=True):
            if req.start_sample != state.next_sample or audio.shape != (req.end_sample - req.start_sample,):
                raise ValueError("VAD audio does not match the stream's request")
            n_chunks = -(-len(audio) // c) if req.final else len(audio) // c
            padded = np.zeros(n_chunks * c, dtype=np.float32)
            padded[: min(len(audio), n_chunks * c)] = audio[: n_chunks * c]
            chunked.append(padded.reshape(n_chunks, c))
            if req.final:
                state.finished = True
        if self.method == "silero":
            probs = self._silero(states, chunked)
        else:
            probs = [self._energy(x) for x in chunked]
        for state, req, p in zip(states, requests, probs, strict=True):
            for k, prob in enumerate(p):
                end = (
                    min(req.start_sample + (k + 1) * c, req.end_sample)
                    if req.final
                    else req.start_sample + (k + 1) * c
                )
                state.record(end, float(prob))

    def decide(self, state: VadState, hop_start: int, end_sample: int) -> SpeechDecision:
        """Speech verdict for the window ending at ``end_sample`` whose hop began at ``hop_start``."""
        if not self.config.enabled:
            return SpeechDecision(True, 1.0, 0)
        return state.decide(hop_start, end_sample, self.config.threshold, self.config.min_speech_ratio)

    def _energy(self, chunks: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(np.square(chunks, dtype=np.float64), axis=1) + 1e-20)
        dbfs = 20.0 * np.log10(rms)
        return 1.0 / (1.0 + np.exp(-(dbfs - self.config.energy_threshold_dbfs) / ENERGY_SLOPE_DB))

    def _silero(self, states: Sequence[VadState], chunked: list[np.ndarray]) -> list[np.ndarray]:
        lengths = np.array([len(x) for x in chunked], dtype=np.int64)
        out = [np.zeros(n, dtype=np.float32) for n in lengths]
        if self._session is None or not len(chunked) or lengths.max() == 0:
            return out
        ctx, c = self.context_samples, self.chunk_samples
        order = np.argsort(-lengths, kind="stable")  # longest first: the lanes of step t are a prefix
        n_max = int(lengths[order[0]])
        audio = np.zeros((len(order), n_max, c), dtype=np.float32)  # (B, chunks, chunk_samples)
        for row, i in enumerate(order):
            audio[row, : lengths[i]] = chunked[i]
        state = np.stack([states[i].state for i in order], axis=1)  # (2, B, 128)
        x = np.empty((len(order), ctx + c), dtype=np.float32)  # (B, context + chunk)
        x[:, :ctx] = np.stack([states[i].context for i in order])
        probs = np.zeros((len(order), n_max), dtype=np.float32)
        sorted_lengths = lengths[order]
        sr = np.array(self.sample_rate_hz, dtype=np.int64)
        for t in range(n_max):
            m = int(np.count_nonzero(sorted_lengths > t))
            x[:m, ctx:] = audio[:m, t]
            prob, new_state = self._session.run(None, {"input": x[:m], "state": state[:, :m], "sr": sr})
            state[:, :m] = new_state
            probs[:m, t] = prob[:, 0]
            x[:m, :ctx] = x[:m, -ctx:]
        for row, i in enumerate(order):
            states[i].state[:] = state[:, row]
            states[i].context[:] = x[row, :ctx]
            out[i][:] = probs[row, : lengths[i]]
        return out
