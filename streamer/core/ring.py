"""Per-stream ring buffer of mono float32 audio, addressed by absolute sample index.

One producer thread (e.g. the sounddevice callback) pushes, one consumer thread reads. The
buffer is preallocated; a push copies its chunk into it under a lock held only for that copy
and a few integer updates. When the consumer falls behind, the OLDEST unread audio is
overwritten (in real time the newest audio matters) and counted in ``dropped_samples``.

Absolute indices: sample ``i`` is the ``i``-th sample ever pushed since the last ``reset()``.
``total_written`` counts every pushed sample, including ones that were dropped, so stream time
(``index / sample_rate_hz``) keeps advancing through overflows.
"""

from __future__ import annotations

import threading

import numpy as np


class RingOverwrittenError(IndexError):
    """The requested samples were once in the buffer but have been overwritten by newer audio."""


class RingBuffer:
    """Fixed-capacity mono float32 ring with absolute sample counters.

    The consumer copies audio by absolute index without consuming it (``read_range()``), then
    tells the ring what it is done with (``mark_read(end_sample)``).
    Unread audio that is overwritten counts toward ``dropped_samples``; already-read audio that
    is overwritten is not a drop.
    """

    def __init__(self, capacity_samples: int) -> None:
        if isinstance(capacity_samples, bool) or not isinstance(capacity_samples, int):
            raise TypeError(f"capacity_samples must be an int, got {type(capacity_samples).__name__}")
        if capacity_samples <= 0:
            raise ValueError(f"capacity_samples must be positive, got {capacity_samples}")
        self.capacity_samples = capacity_samples
        self._buf = np.zeros(capacity_samples, dtype=np.float32)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget all audio and counters (absolute index starts again at 0)."""
        with self._lock:
            self._buf.fill(0.0)
            self._total_written = 0
            self._read_pos = 0
            self._dropped_samples = 0

    # ---- producer side -------------------------------------------------------------------

    def push(self, chunk: np.ndarray, scale: float | None = None) -> int:
        """Append a 1-D chunk of any length; returns how many unread samples this push dropped.

        A chunk longer than the capacity keeps only its newest ``capacity_samples`` samples
        (the rest count as written and, being unread, as dropped). With ``scale``, ``chunk`` holds
        integers (e.g. 16-bit PCM) that are multiplied by ``scale`` as they are written: one pass
        over the audio, no float copy of it first.
        """
        x = chunk if scale is not None else np.asarray(chunk, dtype=np.float32)  # no copy when float32
        if x.ndim != 1:
            raise ValueError(f"push expects a 1-D mono chunk, got shape {x.shape}")
        n = int(x.shape[0])
        if n == 0:
            return 0
        cap = self.capacity_samples
        kept = x[n - cap :] if n > cap else x  # view: only the newest `cap` can survive
        n_kept = int(kept.shape[0])
        with self._lock:
            start = self._total_written + n - n_kept  # absolute index of kept[0]
            pos = start % cap
            first = min(n_kept, cap - pos)
            if scale is None:
                self._buf[pos : pos + first] = kept[:first]
                if first < n_kept:
                    self._buf[: n_kept - first] = kept[first:]
            else:  # cast into place, then scale in place (a mixed-type multiply is several times slower)
                part = self._buf[pos : pos + first]
                part[...] = kept[:first]
                part *= np.float32(scale)
                if first < n_kept:
                    rest = self._buf[: n_kept - first]
                    rest[...] = kept[first:]
                    rest *= np.float32(scale)
            self._total_written += n
            oldest = self._total_written - cap
            dropped_now = 0
            if self._read_pos < oldest:
                dropped_now = oldest - self._read_pos
                self._dropped_samples += dropped_now
                self._read_pos = oldest
        return dropped_now

    # ---- counters ------------------------------------------------------------------------

    @property
    def total_written(self) -> int:
        """Samples ever pushed since ``reset()`` (= absolute index one past the newest sample)."""
        return self._total_written

    @property
    def dropped_samples(self) -> int:
        """Unread samples overwritten before the consumer read them, since ``reset()``."""
        return self._dropped_samples

    @property
    def read_position(self) -> int:
        """Absolute index of the oldest unread sample."""
        return self._read_pos

    @property
    def oldest_sample(self) -> int:
        """Absolute index of the oldest sample still held (``read_range`` may start here)."""
        return max(0, self._total_written - self.capacity_samples)

    # ---- consumer side -------------------------------------------------------------------

    def mark_read(self, end_sample: int) -> None:
        """Mark every sample before absolute index ``end_sample`` as read (never moves backwards)."""
        with self._lock:
            if end_sample > self._total_written:
                raise ValueError(
                    f"mark_read({end_sample}) is beyond the {self._total_written} samples written"
                )
            self._read_pos = max(self._read_pos, end_sample)

    def read_range(self, start_sample: int, end_sample: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy of absolute samples ``[start_sample, end_sample)``; does not consume.

        Raises ``ValueError`` for a malformed range or one reaching past ``total_written``, and
        ``RingOverwrittenError`` when ``start_sample`` is older than ``oldest_sample``.
        """
        if start_sample < 0 or end_sample < start_sample:
            raise ValueError(f"bad range [{start_sample}, {end_sample}): need 0 <= start <= end")
        n = end_sample - start_sample
        dest = self._dest(out, n)
        with self._lock:
            total = self._total_written
            if end_sample > total:
                raise ValueError(
                    f"range [{start_sample}, {end_sample}) reaches past the {total} samples written"
                )
            oldest = max(0, total - self.capacity_samples)
            if start_sample < oldest:
                raise RingOverwrittenError(
                    f"samples [{start_sample}, {oldest}) were overwritten; the buffer holds [{oldest}, {total})"
                )
            self._copy_out_locked(start_sample, end_sample, dest)
        return dest

    # ---- internals -----------------------------------------------------------------------

    @staticmethod
    def _dest(out: np.ndarray | None, n: int) -> np.ndarray:
        if out is None:
            return np.empty(n, dtype=np.float32)
        if out.dtype != np.float32 or out.shape != (n,):
            raise ValueError(f"out must be float32 of shape ({n},), got {out.dtype} {out.shape}")
        return out

    def _copy_out_locked(self, start: int, end: int, dest: np.ndarray) -> None:
        """Copy absolute ``[start, end)`` into ``dest``; caller holds the lock and checked bounds."""
        n = end - start
        if n == 0:
            return
        cap = self.capacity_samples
        pos = start % cap
        first = min(n, cap - pos)
        dest[:first] = self._buf[pos : pos + first]
        if first < n:
            dest[first:n] = self._buf[: n - first]
