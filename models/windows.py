"""The one padding policy: how audio shorter or longer than a window fills it (training and streaming)."""

from __future__ import annotations

import numpy as np


def fit_window(audio: np.ndarray, window_samples: int) -> np.ndarray:
    """Fit mono audio to exactly ``window_samples``, aligned to the END of the window.

    Longer audio keeps its last ``window_samples``; shorter audio is right-aligned with zeros
    before it. A streaming window always ends at "now", so its start-up windows (less than a
    window of audio heard so far) are padded exactly like a short training clip placed at the
    end of its window.
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {audio.shape}")
    if window_samples <= 0:
        raise ValueError("window_samples must be positive")
    out = np.zeros(window_samples, dtype=np.float32)
    n = min(len(audio), window_samples)
    if n:
        out[window_samples - n :] = audio[len(audio) - n :]
    return out
