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


def window_ends(n_samples: int, hop_samples: int) -> list[int]:
    """Absolute end samples of the windows a stream of ``n_samples`` yields, as the streamer makes them.

    One window ends every hop (``hop, 2*hop, ...``); when the stream ends between two hops, a final
    window ends at its last sample (the streamer's flush). A stream shorter than one hop yields one
    window ending at its last sample. Windows that start before sample 0 are padded by ``fit_window``.
    """
    if hop_samples <= 0:
        raise ValueError("hop_samples must be positive")
    if n_samples <= 0:
        return []
    ends = list(range(hop_samples, n_samples + 1, hop_samples))
    if not ends or ends[-1] != n_samples:
        ends.append(n_samples)
    return ends


def stream_windows(audio: np.ndarray, window_samples: int, hop_samples: int) -> tuple[list[int], np.ndarray]:
    """Every window of a whole recording as the streamer sees it: (end samples, (n, window_samples) array)."""
    ends = window_ends(len(audio), hop_samples)
    out = np.zeros((len(ends), window_samples), dtype=np.float32)
    for i, end in enumerate(ends):
        out[i] = fit_window(audio[max(0, end - window_samples) : end], window_samples)
    return ends, out
