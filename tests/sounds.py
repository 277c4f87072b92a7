"""Synthetic corpora of other tasks for tests: an UrbanSound8K tree (metadata + fold folders) and a GTZAN tree.

Three seeded sound classes that a small model tells apart: a siren (a tone sweeping 700-1400 Hz),
an engine (a 45 Hz harmonic rumble) and a dog bark (short bursts of band-limited noise).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
US8K_CLASSES = ("siren", "engine_idling", "dog_bark")
GENRES = ("blues", "jazz", "metal")


def synth_sound(kind: str, seed: int, seconds: float = 1.5) -> np.ndarray:
    """About ``seconds`` of one class's sound, each seed its own level, rate and timing."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rng.uniform(0.8, 1.2) * SR)
    t = np.arange(n) / SR
    if kind in ("siren", "blues"):
        f = 1050 + 350 * np.sin(2 * np.pi * rng.uniform(0.8, 1.6) * t)
        x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif kind in ("engine_idling", "jazz"):
        f0 = 45.0 * rng.uniform(0.9, 1.1)
        x = sum(np.sin(2 * np.pi * k * f0 * t + k) / k for k in range(1, 12))
    else:  # dog_bark, metal: noise bursts
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        spec *= (freqs > 400) & (freqs < 2500)
        bursts = (np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * t) > 0.6).astype(float)
        x = np.fft.irfft(spec, n) * bursts
    x = 0.3 * x / (np.abs(x).max() + 1e-9) * rng.uniform(0.4, 1.0)
    return (x + 0.001 * rng.standard_normal(n)).astype(np.float32)


def write_us8k(root: Path, per_fold: int = 2) -> Path:
    """``root/metadata/UrbanSound8K.csv`` and ``root/audio/fold1..10/<fsID>-<classID>-0-<k>.wav``."""
    rows = []
    for fold in range(1, 11):
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for class_id, name in enumerate(US8K_CLASSES):
            for k in range(per_fold):
                fs_id = 1000 * fold + 10 * class_id + k
                file = f"{fs_id}-{class_id}-0-{k}.wav"
                sf.write(root / "audio" / f"fold{fold}" / file, synth_sound(name, fs_id), SR)
                rows.append([file, fs_id, 0.0, 1.5, 1, fold, class_id, name])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with (root / "metadata" / "UrbanSound8K.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        writer.writerows(rows)
    return root


def write_gtzan(root: Path, per_genre: int = 4) -> Path:
    """``root/<genre>/<genre>.0000N.wav`` (GTZAN's layout)."""
    for g, genre in enumerate(GENRES):
        (root / genre).mkdir(parents=True, exist_ok=True)
        for k in range(per_genre):
            sf.write(root / genre / f"{genre}.{k:05d}.wav", synth_sound(genre, 100 * g + k), SR)
    return root
