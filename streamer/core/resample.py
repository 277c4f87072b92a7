"""Chunked resampling of incoming audio to the model's rate (soxr, HQ), channels mixed down to mono.

``StreamResampler`` turns chunks of any length and channel count into mono float32 at the
output rate. Fed the same audio in any chunking and flushed at the end, it gives the same
samples as one-shot ``soxr.resample(mono, in_rate_hz, out_rate_hz, quality="HQ")``
(bit-exact with soxr 0.5; see tests/test_resample.py).
"""

from __future__ import annotations

import numpy as np
import soxr

MAX_RATE_HZ = 384_000
MAX_CHANNELS = 8
QUALITY = "HQ"
INT16_SCALE = 1.0 / 32768.0  # int16 -> float in [-1, 1)


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


class StreamResampler:
    """Mono float32 at ``out_rate_hz`` from chunks at ``in_rate_hz`` with ``channels`` channels.

    ``process(chunk)`` returns whatever output is ready (soxr holds back a short algorithmic
    delay: at HQ about 340 output samples for 48 kHz -> 16 kHz). ``flush()`` returns the tail
    at the end of the stream; after it, ``process`` raises until ``reset()``. Equal rates take
    an identity fast path (mixdown and conversion only, no delay).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, channels: int) -> None:
        _check_rate("in_rate_hz", in_rate_hz)
        _check_rate("out_rate_hz", out_rate_hz)
        check_channels(channels)
        self.in_rate_hz = int(in_rate_hz)
        self.out_rate_hz = int(out_rate_hz)
        self.channels = int(channels)
        self.identity = self.in_rate_hz == self.out_rate_hz
        self.reset()

    def reset(self) -> None:
        """Start a fresh stream (drops any pending output)."""
        self._soxr: soxr.ResampleStream | None = (
            None
            if self.identity
            else soxr.ResampleStream(self.in_rate_hz, self.out_rate_hz, 1, dtype="float32", quality=QUALITY)
        )
        self._flushed = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample one chunk; returns (n_out,) float32 (possibly empty)."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process after flush(); call reset() to start a new stream")
        mono = to_mono_float32(chunk, self.channels)
        if self._soxr is None:
            return mono
        return self._soxr.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining output samples."""
        if self._flushed:
            raise RuntimeError("StreamResampler.flush called twice; call reset() to start a new stream")
        self._flushed = True
        if self._soxr is None:
            return np.zeros(0, dtype=np.float32)
        return self._soxr.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
