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

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One window by absolute sample index: audio ``[start_sample, end_sample)``.

    ``start_sample`` is negative for start-up windows.
    """

    end_sample: int
    start_sample: int
    window_samples: int

    def __post_init__(self) -> None:
        if self.window_samples <= 0:
            raise ValueError(f"window_samples must be positive, got {self.window_samples}")
        if self.start_sample != self.end_sample - self.window_samples:
            raise ValueError(
                f"start_sample ({self.start_sample}) must equal end_sample - window_samples "
                f"({self.end_sample} - {self.window_samples})"
            )

    @classmethod
    def ending_at(cls, end_sample: int, window_samples: int) -> WindowSpec:
        return cls(
            end_sample=end_sample, start_sample=end_sample - window_samples, window_samples=window_samples
        )

    @property
    def is_startup(self) -> bool:
        """True when the window starts before sample 0 and will be zero-padded at the front."""
        return self.start_sample < 0

    @property
    def audio_start_sample(self) -> int:
        """First sample of real audio in the window (``max(start_sample, 0)``)."""
        return max(self.start_sample, 0)

    @property
    def n_audio_samples(self) -> int:
        """Samples of real audio in the window (less than ``window_samples`` at start-up)."""
        return self.end_sample - self.audio_start_sample

    def t_start_s(self, sample_rate_hz: int) -> float:
        """Start time of the real audio in the window (clamped to 0 for start-up windows)."""
        return self.audio_start_sample / sample_rate_hz

    def t_end_s(self, sample_rate_hz: int) -> float:
        return self.end_sample / sample_rate_hz


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

    def spec(self, end_sample: int) -> WindowSpec:
        return WindowSpec.ending_at(end_sample, self.window_samples)
