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

**Stride** (silero only): silero runs on one chunk in ``silero_stride_chunks`` (chunk ``k`` with
``k % stride == 0``), each with its own 64 samples of preceding audio as context and the
recurrent state carried from the previous chunk it ran on; the others get no probability, and
the window's fraction is over the chunks that ran. **Floor**: a chunk quieter than
``silero_floor_dbfs`` (RMS, default -60 dBFS) gets probability 0 without silero, and the stream's
recurrent state stays as it was. Silero's cost is per chunk run (a recurrent model batches across
streams, not across time, and its per-chunk cost stops falling at a batch of about 16), so the
stride and the floor are what make it affordable for hundreds of streams. CPU per stream-second
and agreement with silero on every chunk, per setting and streams per batch: ``python -m
benchmarks --only vad`` (``benchmarks/vad_bench.py``). The energy gate runs on every chunk. ``Vad.process`` runs all streams of a batch in lockstep, one ONNX call per
chunk position.

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
    silero_stride_chunks: int = 4  # silero runs on one chunk in this many (1: every chunk)
    silero_floor_dbfs: float | None = -60.0  # quieter chunks get probability 0 without silero (None: off)

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ValueError(f"VAD method must be one of {VAD_METHODS}, got {self.method!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.min_speech_ratio <= 1.0:
            raise ValueError(f"min_speech_ratio must be in (0, 1], got {self.min_speech_ratio}")
        if not math.isfinite(self.energy_threshold_dbfs) or self.energy_threshold_dbfs >= 0:
            raise ValueError(f"energy_threshold_dbfs must be negative, got {self.energy_threshold_dbfs}")
        if (
            isinstance(self.silero_stride_chunks, bool)
            or not isinstance(self.silero_stride_chunks, int)
            or (self.silero_stride_chunks < 1)
        ):
            raise ValueError(
                f"silero_stride_chunks must be a positive integer, got {self.silero_stride_chunks!r}"
            )
        if self.silero_floor_dbfs is not None and not (
            math.isfinite(self.silero_floor_dbfs) and self.silero_floor_dbfs < 0
        ):
            raise ValueError(f"silero_floor_dbfs must be negative or None, got {self.silero_floor_dbfs}")


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
        self.stride_chunks = config.silero_stride_chunks if self.method == "silero" else 1
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
        c, ctx = self.chunk_samples, self.context_samples
        stride = self.stride_chunks
        inputs: list[np.ndarray] = []  # per stream: (chunks run, context + chunk)
        ends: list[np.ndarray] = []  # per stream: end sample of each chunk run
        for state, req, audio in zip(states, requests, audios, strict=True):
            if req.start_sample != state.next_sample or audio.shape != (req.end_sample - req.start_sample,):
                raise ValueError("VAD audio does not match the stream's request")
            n_chunks = -(-len(audio) // c) if req.final else len(audio) // c
            padded = np.zeros(ctx + n_chunks * c, dtype=np.float32)  # the context, then whole chunks
            padded[:ctx] = state.context
            padded[ctx : ctx + min(len(audio), n_chunks * c)] = audio[: n_chunks * c]
            first = req.start_sample // c  # absolute index of the request's first chunk
            ks = np.arange((-first) % stride, n_chunks)[::stride]  # the chunks that run
            starts = ks * c  # offsets in ``padded`` of each run's context + chunk
            inputs.append(padded[starts[:, None] + np.arange(ctx + c)])  # (chunks run, context + chunk)
            chunk_ends = req.start_sample + (ks + 1) * c
            ends.append(np.minimum(chunk_ends, req.end_sample) if req.final else chunk_ends)
            if ctx:
                state.context[:] = padded[len(padded) - ctx :]
            state.next_sample = req.end_sample if req.final else req.start_sample + n_chunks * c
            if req.final:
                state.finished = True
        if self.method == "silero":
            probs = self._silero_above_floor(states, inputs)
        else:
            probs = [self._energy(x) for x in inputs]
        for state, chunk_ends, p in zip(states, ends, probs, strict=True):
            for end, prob in zip(chunk_ends.tolist(), p.tolist(), strict=True):
                state.record(end, prob)

    def decide(self, state: VadState, hop_start: int, end_sample: int) -> SpeechDecision:
        """Speech verdict for the window ending at ``end_sample`` whose hop began at ``hop_start``."""
        if not self.config.enabled:
            return SpeechDecision(True, 1.0, 0)
        return state.decide(hop_start, end_sample, self.config.threshold, self.config.min_speech_ratio)

    def _energy(self, chunks: np.ndarray) -> np.ndarray:
        """``chunks``: ``(n, chunk)`` (the energy gate has no context)."""
        rms = np.sqrt(np.mean(np.square(chunks, dtype=np.float64), axis=1) + 1e-20)
        dbfs = 20.0 * np.log10(rms)
        return 1.0 / (1.0 + np.exp(-(dbfs - self.config.energy_threshold_dbfs) / ENERGY_SLOPE_DB))

    def _silero_above_floor(self, states: Sequence[VadState], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Silero on the chunks at or above ``silero_floor_dbfs``; the quieter ones get 0 and leave the
        stream's recurrent state as it was (silence, for silero, is no news)."""
        floor = self.config.silero_floor_dbfs
        if floor is None:
            return self._silero(states, inputs)
        ctx = self.context_samples
        power_floor = 10.0 ** (floor / 10.0)
        loud = [
            np.mean(np.square(x[:, ctx:]), axis=1) >= power_floor for x in inputs
        ]  # per stream: (chunks,)
        ran = self._silero(states, [x[m] for x, m in zip(inputs, loud, strict=True)])
        out = [np.zeros(len(x), dtype=np.float32) for x in inputs]
        for o, m, r in zip(out, loud, ran, strict=True):
            o[m] = r
        return out

    def _silero(self, states: Sequence[VadState], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """``inputs[i]``: stream i's chunks to run, each with its context, ``(n_i, context + chunk)``."""
        lengths = np.array([len(x) for x in inputs], dtype=np.int64)
        out = [np.zeros(n, dtype=np.float32) for n in lengths]
        if self._session is None or not len(inputs) or lengths.max() == 0:
            return out
        order = np.argsort(-lengths, kind="stable")  # longest first: the lanes of step t are a prefix
        n_max = int(lengths[order[0]])
        width = inputs[0].shape[1]
        x = np.zeros((len(order), n_max, width), dtype=np.float32)  # (B, chunks, context + chunk)
        for row, i in enumerate(order):
            x[row, : lengths[i]] = inputs[i]
        state = np.stack([states[i].state for i in order], axis=1)  # (2, B, 128)
        probs = np.zeros((len(order), n_max), dtype=np.float32)
        sorted_lengths = lengths[order]
        sr = np.array(self.sample_rate_hz, dtype=np.int64)
        for t in range(n_max):
            m = int(np.count_nonzero(sorted_lengths > t))
            prob, new_state = self._session.run(
                None, {"input": np.ascontiguousarray(x[:m, t]), "state": state[:, :m], "sr": sr}
            )
            state[:, :m] = new_state
            probs[:m, t] = prob[:, 0]
        for row, i in enumerate(order):
            states[i].state[:] = state[:, row]
            out[i][:] = probs[row, : lengths[i]]
        return out
