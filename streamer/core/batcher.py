"""The dynamic batching policy: which waiting windows (of all streams) go to the model together, and when.

``Batcher`` is a FIFO with the policy and nothing else: no thread, no clock (``now_s`` is passed
in). A batch is due when ``max_batch`` items wait, or ``max_wait_ms`` after the oldest waiting item
arrived (adaptive: sooner, see ``BatchConfig``); ``pop`` takes at most ``max_batch`` items, oldest
first. The thread that drains it is ``streamer.runtime.worker.BatchWorker``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Dynamic batching: up to ``max_batch`` windows, waiting at most ``max_wait_ms`` after the first.

    With ``adaptive`` the wait is only spent when it is worth it: the batcher estimates the rate at
    which windows arrive, and a batch is due at once when fewer than one more window is expected
    within ``max_wait_ms`` (a single stream never waits), or as soon as as many windows wait as
    are expected in that time (a batch of 4 at 200 windows/s and 20 ms).
    """

    max_batch: int = 16  # on the CPU larger batches run no faster per window; the CLI uses 64 on CUDA
    max_wait_ms: float = 20.0
    adaptive: bool = True
    rate_tau_s: float = 2.0  # time constant of the arrival-rate estimate (adaptive only)

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not math.isfinite(self.max_wait_ms) or self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not (math.isfinite(self.rate_tau_s) and self.rate_tau_s > 0):
            raise ValueError(f"rate_tau_s must be positive, got {self.rate_tau_s}")


class Batcher(Generic[T]):
    """FIFO of items with the dynamic batching policy; deterministic, no thread, no clock."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self._items: deque[tuple[T, float]] = deque()
        self.reset()

    def reset(self) -> None:
        self._items.clear()
        self._rate_per_s = 0.0
        self._rate_at_s: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def rate_per_s(self) -> float:
        """Arrival rate, exponentially weighted over ``rate_tau_s``, as of the latest push."""
        return self._rate_per_s

    def push(self, item: T, now_s: float) -> None:
        self._items.append((item, now_s))
        tau = self.config.rate_tau_s
        if self._rate_at_s is not None:
            self._rate_per_s *= math.exp(-max(0.0, now_s - self._rate_at_s) / tau)
        self._rate_at_s = now_s if self._rate_at_s is None else max(self._rate_at_s, now_s)
        self._rate_per_s += 1.0 / tau

    def due_s(self) -> float | None:
        """When the next batch is due (None when empty): now if full, else oldest arrival + max_wait.

        Adaptive: at the oldest arrival (i.e. now) when ``len >= floor(rate * max_wait) + 1``.
        """
        if not self._items:
            return None
        n, cfg = len(self._items), self.config
        if n >= cfg.max_batch:
            return -math.inf
        oldest = self._items[0][1]
        if cfg.adaptive and n >= math.floor(self._rate_per_s * cfg.max_wait_ms / 1000.0) + 1:
            return oldest
        return oldest + cfg.max_wait_ms / 1000.0

    def ready(self, now_s: float) -> bool:
        due = self.due_s()
        return due is not None and now_s >= due

    def pop(self, now_s: float, force: bool = False) -> list[T]:
        """The next batch (oldest first, at most max_batch) if due at ``now_s`` or ``force``, else []."""
        if not (force or self.ready(now_s)):
            return []
        n = min(len(self._items), self.config.max_batch)
        return [self._items.popleft()[0] for _ in range(n)]
