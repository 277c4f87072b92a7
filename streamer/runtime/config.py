"""The runtime's settings and counters: ``RuntimeConfig`` (its defaults are what the CLI runs), ``RuntimeStats``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from emostream.streamer.core.batcher import BatchConfig
from emostream.streamer.core.smoother import SmootherConfig
from emostream.streamer.core.vad import VadConfig


class StreamLimitError(RuntimeError):
    """``open_stream`` beyond ``RuntimeConfig.max_streams``."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """``ring_s``: audio kept per stream (about 64 KB per second of ring: 256 streams x 30 s = 490 MB)."""

    hop_s: float = 1.0
    batching: BatchConfig = field(default_factory=BatchConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    ring_s: float = 30.0
    max_streams: int = 256
    pipeline: bool = True  # VAD + log-mel on one thread, model + publication on a second

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")
        if not (math.isfinite(self.ring_s) and self.ring_s > 0):
            raise ValueError(f"ring_s must be positive, got {self.ring_s}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {self.max_streams}")


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    streams: int
    windows_submitted: int
    windows_published: int
    windows_classified: int
    windows_nonspeech: int
    window_errors: int
    sink_errors: int
    queued: int
    batches: int
    mean_batch: float
