"""Streaming resampling of incoming audio to the model's rate, channels mixed down to mono, with nothing held back.

``StreamResampler`` is a causal polyphase windowed-sinc (Kaiser) filter: output sample ``n`` (time
``n / out_rate_hz``) is computed only from input samples at or before that time, so every chunk
yields all the output its own last sample allows. Nothing waits for the next chunk: the estimate
of a window can leave as soon as the chunk holding the window's last sample has arrived, at any
input rate and chunk size. The price is a fixed group delay of the audio itself
(``ResamplerDesign.delay_s``: half the filter, 3.6 ms at 48 kHz -> 16 kHz), the same for every
chunking. Fed the same audio in any chunking, the output is bit-identical to one call of
``resample`` on the whole recording (each output sample is one fixed sum over the same taps; see
tests/test_resample.py), which is the offline path that replay is checked against.

Filter: pass band to 0.9 of the lower rate's Nyquist frequency, stop band from that Nyquist
frequency on, attenuated by ``ATTENUATION_DB`` (soxr's "HQ" uses the same band edges).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MAX_RATE_HZ = 384_000
MAX_CHANNELS = 8
INT16_SCALE = 1.0 / 32768.0  # int16 -> float in [-1, 1)
PASSBAND = 0.9  # pass band edge, as a fraction of the lower rate's Nyquist frequency
ATTENUATION_DB = 90.0  # stop band attenuation of the Kaiser design
BLOCK_OUTPUTS = 256  # outputs computed together (a (256, n_taps) product stays in cache)
BANK_MAX_VALUES = 1 << 22  # a phase bank larger than this (rare rates) is computed per chunk instead


def _check_rate(name: str, rate_hz: int) -> None:
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, int | np.integer):
        raise ValueError(f"{name} must be an integer sample rate in Hz, got {rate_hz!r}")
    if not 0 < rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"{name} must be in 1..{MAX_RATE_HZ} Hz, got {rate_hz}")


def check_channels(channels: int) -> None:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer):
        raise ValueError(f"channels must be an integer, got {channels!r}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")


def to_mono_float32(chunk: np.ndarray, channels: int) -> np.ndarray:
    """(frames,) or (frames, channels) int16/float -> (frames,) float32, channels averaged.

    int16 is scaled by 1/32768 into [-1, 1). Always returns a new array (callers such as the
    sounddevice callback reuse their input buffer).
    """
    x = np.asarray(chunk)
    if x.dtype.kind == "i" and x.dtype.itemsize == 2:  # int16 in either byte order
        x = np.multiply(x, np.float32(INT16_SCALE), dtype=np.float32)
    elif x.dtype in (np.float32, np.float64):
        x = x.astype(np.float32, copy=True)
    else:
        raise TypeError(f"audio must be int16, float32 or float64, got {x.dtype}")
    if x.ndim == 1 and channels == 1:
        return x
    if x.ndim != 2 or x.shape[1] != channels:
        raise ValueError(f"expected shape (frames, {channels}) for {channels}-channel audio, got {x.shape}")
    if channels == 1:
        return x.reshape(-1)  # (frames, 1) is C-contiguous: a view of our own copy
    return x.mean(axis=1, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ResamplerDesign:
    """The filter for one rate pair: ``up``/``down`` (out/in reduced), ``n_taps`` input samples per output.

    Output sample ``n`` sits ``n * down / up`` input samples into the stream: at input index
    ``base = n * down // up`` plus the fraction ``phase / up``. It is the sum over the ``n_taps``
    inputs ``base - n_taps + 1 .. base`` times the taps of its ``phase``.
    """

    in_rate_hz: int
    out_rate_hz: int
    up: int
    down: int
    n_taps: int
    cutoff: float  # cycles per input sample (-6 dB point, middle of the transition band)
    beta: float  # Kaiser window shape

    @classmethod
    def of(cls, in_rate_hz: int, out_rate_hz: int) -> ResamplerDesign:
        _check_rate("in_rate_hz", in_rate_hz)
        _check_rate("out_rate_hz", out_rate_hz)
        g = math.gcd(int(in_rate_hz), int(out_rate_hz))
        nyquist = min(in_rate_hz, out_rate_hz) / 2 / in_rate_hz  # cycles per input sample
        width = (1.0 - PASSBAND) * nyquist
        n_taps = math.ceil((ATTENUATION_DB - 8.0) / (2.285 * 2 * math.pi * width)) + 1  # Kaiser's estimate
        return cls(
            int(in_rate_hz),
            int(out_rate_hz),
            int(out_rate_hz) // g,
            int(in_rate_hz) // g,
            n_taps,
            (1.0 + PASSBAND) / 2 * nyquist,
            0.1102 * (ATTENUATION_DB - 8.7),
        )

    @property
    def delay_s(self) -> float:
        """Group delay of the audio through the filter (the price of holding nothing back)."""
        return self.n_taps / 2 / self.in_rate_hz

    def taps(self, phases: np.ndarray) -> np.ndarray:
        """(len(phases), n_taps) float32; entry ``m`` multiplies input ``base - n_taps + 1 + m``. Rows sum to 1."""
        half = self.n_taps / 2
        back = np.arange(self.n_taps - 1, -1, -1, dtype=np.float64)  # inputs before the output's time
        u = np.asarray(phases, dtype=np.float64)[:, None] / self.up + back[None, :] - half  # (P, n_taps)
        window = np.i0(self.beta * np.sqrt(np.clip(1.0 - (u / half) ** 2, 0.0, None))) / np.i0(self.beta)
        h = 2 * self.cutoff * np.sinc(2 * self.cutoff * u) * window
        h /= h.sum(axis=1, keepdims=True)  # unit gain at 0 Hz for every phase
        return h.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _bank(in_rate_hz: int, out_rate_hz: int) -> np.ndarray | None:
    """Every phase's taps, (up, n_taps), read-only and shared by all streams; None when too large."""
    d = ResamplerDesign.of(in_rate_hz, out_rate_hz)
    if d.up * d.n_taps > BANK_MAX_VALUES:
        return None
    bank = d.taps(np.arange(d.up))
    bank.setflags(write=False)
    return bank


class StreamResampler:
    """Mono float32 at ``out_rate_hz`` from chunks at ``in_rate_hz`` with ``channels`` channels.

    ``process(chunk)`` returns every output sample whose time the chunk has reached (a chunk of
    ``k`` input samples yields ``k * out / in`` samples, give or take one); ``flush()`` ends the
    stream (nothing is pending: it returns an empty array) and after it ``process`` raises until
    ``reset()``. Equal rates take an identity fast path (mixdown and conversion only).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, channels: int) -> None:
        check_channels(channels)
        self.design = ResamplerDesign.of(in_rate_hz, out_rate_hz)
        self.in_rate_hz = self.design.in_rate_hz
        self.out_rate_hz = self.design.out_rate_hz
        self.channels = int(channels)
        self.identity = self.in_rate_hz == self.out_rate_hz
        self._bank = None if self.identity else _bank(self.in_rate_hz, self.out_rate_hz)
        self.reset()

    def reset(self) -> None:
        """Start a fresh stream (the filter's history is silence)."""
        self._history = np.zeros(self.design.n_taps - 1, dtype=np.float32)
        self.n_in = 0  # input samples consumed
        self.n_out = 0  # output samples produced (the next one's index)
        self._flushed = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample one chunk; returns (n_out,) float32 (possibly empty)."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process after flush(); call reset() to start a new stream")
        mono = to_mono_float32(chunk, self.channels)
        if self.identity or len(mono) == 0:
            return mono
        d = self.design
        buf = np.concatenate((self._history, mono))  # buf[i] is input sample n_in - (n_taps - 1) + i
        total = self.n_in + len(mono)
        end = -(-total * d.up // d.down)  # outputs whose time is at or before the last input sample
        n = np.arange(self.n_out, end, dtype=np.int64)
        base = n * d.down // d.up
        frames = sliding_window_view(buf, d.n_taps)  # frames[j] ends at input n_in + j
        out = np.empty(len(n), dtype=np.float32)
        for s in range(0, len(n), BLOCK_OUTPUTS):  # blocks that stay in the CPU's cache
            out[s : s + BLOCK_OUTPUTS] = self._block(
                frames, n[s : s + BLOCK_OUTPUTS], base[s : s + BLOCK_OUTPUTS]
            )
        self._history = buf[len(buf) - (d.n_taps - 1) :].copy()
        self.n_in, self.n_out = total, end
        return out

    def _block(self, frames: np.ndarray, n: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Outputs ``n`` (at inputs ``base``): each the sum of its frame times its phase's taps."""
        d = self.design
        if d.up == 1:  # integer ratio: one phase, evenly spaced frames (a view, no gather)
            start = int(base[0]) - self.n_in
            rows = frames[start : start + d.down * (len(n) - 1) + 1 : d.down]
            taps = self._bank[0] if self._bank is not None else d.taps(np.zeros(1))[0]
        else:
            phase = n * d.down - base * d.up
            rows = frames[base - self.n_in]
            taps = self._bank[phase] if self._bank is not None else d.taps(phase)
        return (rows * taps).sum(axis=1, dtype=np.float32)  # (outputs, n_taps) -> (outputs,)

    def flush(self) -> np.ndarray:
        """End of stream: nothing is held back, so this returns an empty array."""
        if self._flushed:
            raise RuntimeError("StreamResampler.flush called twice; call reset() to start a new stream")
        self._flushed = True
        return np.zeros(0, dtype=np.float32)


def resample(audio: np.ndarray, in_rate_hz: int, out_rate_hz: int, channels: int = 1) -> np.ndarray:
    """The offline path: a whole recording at once; equal to ``StreamResampler`` fed it in any chunking."""
    return StreamResampler(in_rate_hz, out_rate_hz, channels).process(audio)
