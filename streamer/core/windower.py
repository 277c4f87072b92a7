"""Decides when a classification window is due, by absolute sample index of one stream.

A window of ``window_samples`` ends every ``hop_samples``: end indices are ``hop, 2*hop, ...``
so the first estimate comes after the first hop, not after a full window. At the end of a stream,
``flush()`` adds a final window ending at the last sample when that falls between two hops.
Together this is exactly ``models.windows.window_ends`` (the offline replay of the same
policy; tests check they agree). Windows whose start
(``end - window_samples``) is below 0 are start-up windows: only ``end`` samples of audio
exist, and the caller pads them with ``models.windows.fit_window`` (right-aligned, zeros
before) - the same padding policy training uses for short clips.
"""

from __future__ import annotations


class Windower:
    """Counts one stream's samples and reports the end indices of windows that became due.

    ``push`` may return several ends at once when a large chunk arrives or the consumer fell
    behind; which of them to run (all, or only the newest) is the caller's policy.
    """

    def __init__(self, window_samples: int, hop_samples: int) -> None:
        if window_samples <= 0 or hop_samples <= 0:
            raise ValueError(
                f"window_samples and hop_samples must be positive, got {window_samples}, {hop_samples}"
            )
        if hop_samples > window_samples:
            raise ValueError(
                f"hop_samples ({hop_samples}) > window_samples ({window_samples}) would leave audio unclassified"
            )
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self.reset()

    def reset(self) -> None:
        self._total_samples = 0
        self._next_end_sample = self.hop_samples
        self._flushed = False

    @property
    def total_samples(self) -> int:
        """Samples pushed since ``reset()`` (absolute index one past the newest sample)."""
        return self._total_samples

    @property
    def next_end_sample(self) -> int:
        """End index of the next window: ``push`` reports it once ``total_samples`` reaches it."""
        return self._next_end_sample

    def push(self, n_new_samples: int) -> list[int]:
        """Count ``n_new_samples`` more samples; return end indices of windows now ready, oldest first."""
        if n_new_samples < 0:
            raise ValueError(f"n_new_samples must be >= 0, got {n_new_samples}")
        if self._flushed:
            raise RuntimeError("Windower.push after flush(); call reset() to start a new stream")
        self._total_samples += n_new_samples
        if self._total_samples < self._next_end_sample:
            return []
        ends = list(range(self._next_end_sample, self._total_samples + 1, self.hop_samples))
        self._next_end_sample = ends[-1] + self.hop_samples
        return ends

    def flush(self) -> list[int]:
        """End of stream: ``[total_samples]`` when audio arrived after the last hop, else ``[]``.

        Further ``push``/``flush`` calls raise until ``reset()``.
        """
        if self._flushed:
            raise RuntimeError("Windower.flush called twice; call reset() to start a new stream")
        self._flushed = True
        last_end = self._next_end_sample - self.hop_samples
        return [self._total_samples] if self._total_samples > last_end else []
