"""The test oracle: whole-recording inference without streaming, which streaming must equal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from emostream.models.features import LogMel
from emostream.models.windows import stream_windows

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier


@torch.inference_mode()
def offline_window_probs(audio: np.ndarray, classifier: Classifier, hop_samples: int, batch: int = 32) -> np.ndarray:
    """Whole-recording reference, no streaming: ``stream_windows`` + ``LogMel`` + ``predict`` -> (n_windows, n_classes).

    ``audio`` is mono at the model's rate.
    """
    fc = classifier.feature_config
    _, windows = stream_windows(np.asarray(audio, dtype=np.float32), fc.window_samples, hop_samples)
    logmel = LogMel(fc).eval()
    out = [np.zeros((0, len(classifier.labels)), dtype=np.float32)]
    for i in range(0, len(windows), batch):
        feats = logmel(torch.from_numpy(windows[i : i + batch])).numpy()
        out.append(np.asarray(classifier.predict(feats), dtype=np.float32))
    return np.concatenate(out)
