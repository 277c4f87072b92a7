"""The model worker thread: ONE daemon thread that drains a ``Batcher`` into ``handle(batch)``.

Submitting never blocks on the model, so it is safe from an asyncio loop or an audio callback.
An exception in ``handle`` is reported to ``on_error(batch, exc)`` and the worker goes on with the
next batch. ``streamer.runtime.runtime.Runtime`` runs its batch handler (VAD, features, model,
publication) here, so all of that stays off the callers' threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from emostream.streamer.core.batcher import BatchConfig, Batcher

T = TypeVar("T")


class BatchWorker(Generic[T]):
    """One thread running ``handle(batch)`` for batches taken from a ``Batcher``."""

    def __init__(
        self,
        config: BatchConfig,
        handle: Callable[[list[T]], None],
        on_error: Callable[[list[T], BaseException], None] | None = None,
        name: str = "emostream-worker",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.handle = handle
        self.on_error = on_error
        self.name = name
        self.clock = clock
        self.on_batch: Callable[[int], None] | None = None  # observer: the size of each batch handled
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
                if self.on_batch is not None:
                    try:
                        self.on_batch(len(batch))
                    except Exception:
                        pass
