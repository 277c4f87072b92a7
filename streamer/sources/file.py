"""File source: any soundfile-readable file (WAV, FLAC, OGG, ...; mono or multichannel; any rate) in blocks.

``FileSource(path, block_ms=20, realtime=False, speed=1.0).blocks()`` yields
``(block (frames, channels) float32, arrival_s)``. As fast as possible by default; with
``realtime`` each block is released when its LAST sample would have arrived from a live source,
``start + samples_through_block / (sample_rate_hz * speed)``: the schedule is computed from the
sample count, so sleeping late on one block does not delay the following ones (no drift).
``arrival_s`` is the ``time.monotonic()`` at which the block was released. Unreadable or
unsupported files raise ``SourceError`` with one clear sentence, at construction.

``stream_file`` pushes a source's blocks into a stream of a running ``Runtime`` and flushes it (the
loop ``emostream demo`` and ``replay`` share); ``replay_file`` runs one file through a fresh
``Runtime`` and yields its estimates (``emostream replay``).
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from emostream.streamer.core.events import ErrorEvent, Estimate
from emostream.streamer.runtime.config import RuntimeConfig
from emostream.streamer.runtime.stream import ErrorCallback, StreamHandle

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier
    from emostream.streamer.runtime.runtime import Runtime


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


def stream_file(
    runtime: Runtime,
    source: FileSource,
    stream_id: str,
    on_block: Callable[[str, np.ndarray], None] | None = None,
    on_error: ErrorCallback | None = None,
    on_estimate: Callable[[Estimate], None] | None = None,
    flush_timeout_s: float | None = 60.0,
) -> bool:
    """Push every block of ``source`` into a new stream of the running ``runtime``, flush and close it.

    ``on_block(stream_id, block)`` sees each block as it is pushed (e.g. the dashboard's input
    level). Returns False when the flush timed out or the runtime stopped first.
    """
    handle = runtime.open_stream(
        stream_id, source.sample_rate_hz, source.channels, on_estimate=on_estimate, on_error=on_error
    )
    try:
        for _ in push_blocks(handle, source, on_block):
            pass
        return handle.flush(wait=True, timeout_s=flush_timeout_s)
    finally:
        runtime.close_stream(stream_id)


def push_blocks(
    handle: StreamHandle, source: FileSource, on_block: Callable[[str, np.ndarray], None] | None = None
) -> Iterator[None]:
    """Push the source's blocks into ``handle`` with their arrival times; yields after each block."""
    for block, arrival_s in source.blocks():
        handle.push(block, arrival_s=arrival_s)
        if on_block is not None:
            on_block(handle.stream_id, block)
        yield


def replay_file(
    path: Path | str,
    classifier: Classifier,
    config: RuntimeConfig | None = None,
    realtime: bool = False,
    speed: float = 1.0,
    block_ms: int = 20,
    stream_id: str | None = None,
) -> Iterator[Estimate]:
    """Stream a sound file through a fresh Runtime and yield its estimates in order.

    As fast as possible by default; ``realtime`` paces the blocks at ``speed`` x real time.
    Errors of windows (e.g. a backend failure) are raised as ``RuntimeError`` after the estimates
    that came before them.
    """
    from emostream.streamer.runtime.runtime import Runtime  # here: importing the source needs no torch

    source = FileSource(path, block_ms=block_ms, realtime=realtime, speed=speed)
    events: queue.SimpleQueue[Estimate | ErrorEvent] = queue.SimpleQueue()
    runtime = Runtime(classifier, config)
    runtime.start()
    try:
        handle = runtime.open_stream(
            stream_id or Path(path).name,
            source.sample_rate_hz,
            source.channels,
            on_estimate=events.put,
            on_error=events.put,
        )
        for _ in push_blocks(handle, source):
            yield from _drain(events)
        if not handle.flush(wait=True, timeout_s=None):
            raise RuntimeError("the runtime stopped before the stream was flushed")
        yield from _drain(events)
    finally:
        runtime.stop(drain=False)


def _drain(events: queue.SimpleQueue[Estimate | ErrorEvent]) -> Iterator[Estimate]:
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if isinstance(event, ErrorEvent):
            raise RuntimeError(f"{event.code}: {event.message}")
        yield event
