"""File source: any soundfile-readable file (WAV, FLAC, OGG, ...; mono or multichannel; any rate) in blocks.

``FileSource(path, block_ms=20, realtime=False, speed=1.0).blocks()`` yields
``(block (frames, channels) float32, arrival_s)``. As fast as possible by default; with
``realtime`` each block is released when its LAST sample would have arrived from a live source,
``start + samples_through_block / (sample_rate_hz * speed)``: the schedule is computed from the
sample count, so sleeping late on one block does not delay the following ones (no drift).
``arrival_s`` is the ``time.monotonic()`` at which the block was released. Unreadable or
unsupported files raise ``SourceError`` with one clear sentence, at construction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf


class SourceError(Exception):
    """The file cannot be read as audio (missing, not audio, unsupported format, empty)."""


class FileSource:
    def __init__(
        self,
        path: Path | str,
        block_ms: int = 20,
        realtime: bool = False,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        if block_ms <= 0:
            raise ValueError(f"block_ms must be positive, got {block_ms}")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.path}: is a directory, not a sound file")
        try:
            info = sf.info(str(self.path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            reason = str(exc).split(":")[-1].strip().rstrip(".") or type(exc).__name__
            raise SourceError(
                f"{self.path}: not a readable sound file ({reason}); use WAV, FLAC, OGG/Vorbis, MP3 or "
                "another format libsndfile reads"
            ) from None
        if info.frames == 0 or info.samplerate <= 0:
            raise SourceError(f"{self.path}: contains no audio")
        self.sample_rate_hz = int(info.samplerate)
        self.channels = int(info.channels)
        self.n_frames = int(info.frames)
        self.block_ms = block_ms
        self.block_frames = max(1, round(self.sample_rate_hz * block_ms / 1000))
        self.realtime = realtime
        self.speed = float(speed)
        self.clock = clock
        self.sleep = sleep

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate_hz

    def blocks(self) -> Iterator[tuple[np.ndarray, float]]:
        start_s = self.clock()
        sent = 0
        try:
            with sf.SoundFile(str(self.path)) as f:
                for block in f.blocks(blocksize=self.block_frames, dtype="float32", always_2d=True):
                    sent += len(block)
                    if self.realtime:
                        due_s = start_s + sent / (self.sample_rate_hz * self.speed)
                        wait_s = due_s - self.clock()
                        if wait_s > 0:
                            self.sleep(wait_s)
                    yield block, self.clock()
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise SourceError(f"{self.path}: read error after {sent} frames ({exc})") from None


def read_mono(path: Path | str) -> tuple[np.ndarray, int]:
    """The whole file as mono float32 (channels averaged) and its sample rate."""
    src = FileSource(path)
    audio, rate = sf.read(str(src.path), dtype="float32", always_2d=True)
    return audio.mean(axis=1, dtype=np.float32), int(rate)
