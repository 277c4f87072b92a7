"""Dynamic batching of classification windows from all streams onto one model worker thread.

Three layers, each usable alone:

- ``Batcher`` (no thread, no clock: ``now_s`` is passed in): a FIFO with the batching policy. A
  batch is due when ``max_batch`` items wait, or ``max_wait_ms`` after the oldest waiting item
  arrived; ``pop`` takes at most ``max_batch`` items, oldest first.
- ``BatchWorker``: ONE daemon thread that drains a ``Batcher`` into ``handle(batch)``. Submitting
  never blocks on the model, so it is safe from an asyncio loop or an audio callback. An exception
  in ``handle`` is reported to ``on_error(batch, exc)`` and the worker goes on with the next batch.
- ``Engine``: a ``BatchWorker`` of ``WindowJob``s whose handler is ``classify``: one
  ``classifier.predict`` per batch; each job's ``on_result(JobResult)`` is called on the worker
  thread, in submission order. A backend error fails only that batch's jobs (``JobResult.error``).

``streamer.pipeline.Runtime`` runs its own handler on a ``BatchWorker`` (features, VAD, then
``classify``), so features, VAD and the model all stay off the callers' threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Dynamic batching: up to ``max_batch`` windows, waiting at most ``max_wait_ms`` after the first.

    With ``adaptive`` the wait is only spent when it is worth it: the batcher estimates the rate at
    which windows arrive, and a batch is due at once when fewer than one more window is expected
    within ``max_wait_ms`` (a single stream never waits), or as soon as as many windows wait as
    are expected in that time (a batch of 4 at 200 windows/s and 20 ms).
    """

    max_batch: int = 64
    max_wait_ms: float = 5.0
    adaptive: bool = False
    rate_tau_s: float = 2.0  # time constant of the arrival-rate estimate (adaptive only)

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not math.isfinite(self.max_wait_ms) or self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not (math.isfinite(self.rate_tau_s) and self.rate_tau_s > 0):
            raise ValueError(f"rate_tau_s must be positive, got {self.rate_tau_s}")


@dataclass(frozen=True, slots=True)
class WindowJob:
    """One window to classify; ``arrival_s`` is the monotonic time its last sample arrived."""

    stream_id: str
    seq: int
    end_sample: int
    logmel: np.ndarray  # (n_mels, T)
    arrival_s: float


@dataclass(frozen=True, slots=True)
class JobResult:
    """``probs`` ``(n_classes,)`` on success, else ``error`` says what the backend raised."""

    job: WindowJob
    probs: np.ndarray | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def classify(classifier: Any, jobs: list[WindowJob]) -> list[JobResult]:
    """Run ``jobs`` through ``classifier.predict`` as one batch; any exception fails all of them."""
    if not jobs:
        return []
    try:
        probs = np.asarray(classifier.predict(np.stack([j.logmel for j in jobs])), dtype=np.float32)
        if probs.shape[0] != len(jobs) or not np.all(np.isfinite(probs)):
            raise ValueError(
                f"model returned {probs.shape} (finite: {bool(np.all(np.isfinite(probs)))}) "
                f"for a batch of {len(jobs)}"
            )
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".strip()
        return [JobResult(job, None, message) for job in jobs]
    return [JobResult(job, probs[i]) for i, job in enumerate(jobs)]


class Batcher(Generic[T]):
    """FIFO of items with the dynamic batching policy; deterministic, no thread, no clock."""

    def __init__(self, config: EngineConfig) -> None:
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


class BatchWorker(Generic[T]):
    """One thread running ``handle(batch)`` for batches taken from a ``Batcher``."""

    def __init__(
        self,
        config: EngineConfig,
        handle: Callable[[list[T]], None],
        on_error: Callable[[list[T], BaseException], None] | None = None,
        name: str = "emostream-engine",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.handle = handle
        self.on_error = on_error
        self.name = name
        self.clock = clock
        self._batcher: Batcher[T] = Batcher(config)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        """Drop waiting items and counters (only while stopped)."""
        if self._thread is not None:
            raise RuntimeError("reset() while the worker runs; stop() it first")
        self._batcher.reset()
        self._running = False
        self._busy = False
        self.n_batches = 0
        self.n_items = 0
        self.n_handler_errors = 0

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._running = True
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True, timeout_s: float | None = 10.0) -> None:
        """Stop the thread; with ``drain`` the waiting items are handled first."""
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._running = False
            if not drain:
                self._batcher.reset()
            self._cond.notify_all()
        if thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._cond:
            self._thread = None

    def submit(self, item: T) -> None:
        self.submit_many((item,))

    def submit_many(self, items: Iterable[T]) -> None:
        now = self.clock()
        with self._cond:
            for item in items:
                self._batcher.push(item, now)
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._batcher)

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until nothing waits and no batch runs; False on timeout (or when stopped with work left)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while len(self._batcher) or self._busy:
                if self._thread is None:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._running and not len(self._batcher):
                        self._cond.notify_all()
                        return
                    now = self.clock()
                    batch = self._batcher.pop(now, force=not self._running)
                    if batch:
                        self._busy = True
                        break
                    due = self._batcher.due_s()
                    self._cond.wait(None if due is None else max(0.0, due - now))
            try:
                self.handle(batch)
            except Exception as exc:  # the worker outlives a bad batch
                self.n_handler_errors += 1
                if self.on_error is not None:
                    try:
                        self.on_error(batch, exc)
                    except Exception:
                        pass
            finally:
                with self._cond:
                    self.n_batches += 1
                    self.n_items += len(batch)
                    self._busy = False
                    self._cond.notify_all()


ResultCallback = Callable[[JobResult], None]


class Engine:
    """``submit(job, on_result)``; ``classifier.predict`` runs batched on one worker thread."""

    def __init__(
        self, classifier: Any, config: EngineConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.classifier = classifier
        self.config = config if config is not None else EngineConfig()
        self.worker: BatchWorker[tuple[WindowJob, ResultCallback]] = BatchWorker(
            self.config, self._handle, name="emostream-engine", clock=clock
        )

    def start(self) -> Engine:
        self.worker.start()
        return self

    def stop(self, drain: bool = True) -> None:
        self.worker.stop(drain=drain)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, job: WindowJob, on_result: ResultCallback) -> None:
        self.worker.submit((job, on_result))

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        return self.worker.wait_idle(timeout_s)

    def _handle(self, batch: list[tuple[WindowJob, ResultCallback]]) -> None:
        results = classify(self.classifier, [job for job, _ in batch])
        for (_, on_result), result in zip(batch, results, strict=True):
            try:
                on_result(result)
            except Exception:  # one bad callback must not starve the others
                pass
