"""The recipe's default settings as plain data (no torch import: the command-line help reads them)."""

from __future__ import annotations

from typing import Any

ROBUST_MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    "bandsplit_bilstm": {"input_norm": "cmn", "pooling": "masked_stats", "time_pool": [4, 2]},
    "clip_stats": {"extended": True, "dynamics": True, "hidden": 64, "heads": 5},
}
"""Settings every new training run uses unless ``model_settings`` says otherwise: level-invariant
input normalisation computed inside the model, pooling that ignores padding and silence, and time
pooled by 4 in the first conv block (half the cost per window of the 2 + 2 default; docs/results.md);
``clip_stats`` fits its extended statistics (spectral shape, level and centroid movement, periodicity,
F0 slope) and its dynamics (level and band modulation over 20-250 ms, speech bursts and voiced
stretches per second, spectral flux, cepstral spread, F0 movement) through a bag of five 64-unit
hidden-layer heads (docs/results.md, 2026-12-05)."""
ROBUST_FEATURE_SETTINGS: dict[str, Any] = {"log_floor": 1e-14}
"""For models with a window normalisation (``input_norm`` other than ``batch``): an absolute log floor far
below quiet speech (-45 dBFS), so only the model's relative floor acts. Other models keep the default."""

BASELINE_FEATURE_GROUPS = ("mel_envelope", "mel_std", "mel_delta", "energy", "pitch")
"""The statistics baseline's column groups (``train.baseline.ClipFeatures``), in order: n_mels, n_mels,
n_mels, 5 and 9 numbers; ``emostream baseline --without`` names them."""
