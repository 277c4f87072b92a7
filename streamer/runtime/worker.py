"""The model worker: ONE daemon thread that drains a ``Batcher`` into ``handle(batch)``, optionally a second.

Submitting never blocks on the model, so it is safe from an asyncio loop or an audio callback.
An exception in ``handle`` is reported to ``on_error(batch, exc)`` and the worker goes on with the
next batch. ``streamer.runtime.runtime.Runtime`` runs its batch handler (VAD, features, model,
publication) here, so all of that stays off the callers' threads.

With ``finish``, the work is a two-stage pipeline: the first thread runs ``handle(batch)`` and
hands its result to a second thread that runs ``finish(result)``, in the same order; at most
``PIPELINE_DEPTH`` results wait between them (the first thread then waits, and the batcher
collects larger batches meanwhile). The runtime prepares a batch (VAD, log-mel) on the first
thread while the second runs the model on the previous one: ONNX Runtime, silero included, gives
up the interpreter lock while it computes, so the two stages use two cores. An exception in
``finish`` is reported to ``on_finish_error(result, exc)``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from emostream.streamer.core.batcher import BatchConfig, Batcher

T = TypeVar("T")

PIPELINE_DEPTH = 2  # results of the first stage that may wait for the second
_STOP = object()


class BatchWorker(Generic[T]):
    """One thread running ``handle(batch)`` for batches taken from a ``Batcher``."""

    def __init__(
        self,
        config: BatchConfig,
        handle: Callable[[list[T]], Any],
        on_error: Callable[[list[T], BaseException], None] | None = None,
        name: str = "emostream-worker",
        clock: Callable[[], float] = time.monotonic,
        finish: Callable[[Any], None] | None = None,
        on_finish_error: Callable[[Any, BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self.handle = handle
        self.on_error = on_error
        self.finish = finish
        self.on_finish_error = on_finish_error
        self.name = name
        self.clock = clock
        self.on_batch: Callable[[int], None] | None = None  # observer: the size of each batch handled
        self._batcher: Batcher[T] = Batcher(config)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._finisher: threading.Thread | None = None
        self._handoff: queue.Queue[Any] = queue.Queue(maxsize=PIPELINE_DEPTH)
        self.reset()

    def reset(self) -> None:
        """Drop waiting items and counters (only while stopped)."""
        if self._thread is not None:
            raise RuntimeError("reset() while the worker runs; stop() it first")
        self._batcher.reset()
        self._running = False
        self._busy = 0  # batches taken from the batcher and not yet through every stage
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
            if self.finish is not None:
                self._finisher = threading.Thread(target=self._finish_loop, name=f"{self.name}-2", daemon=True)
                self._finisher.start()
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
        finisher = self._finisher
        if finisher is not None and finisher is not threading.current_thread():
            finisher.join(timeout_s)  # the first thread sent it _STOP after its last result
        with self._cond:
            self._thread = None
            self._finisher = None

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
        try:
            self._first_stage()
        finally:
            if self._finisher is not None:
                self._handoff.put(_STOP)

    def _first_stage(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._running and not len(self._batcher):
                        self._cond.notify_all()
                        return
                    now = self.clock()
                    batch = self._batcher.pop(now, force=not self._running)
                    if batch:
                        self._busy += 1
                        break
                    due = self._batcher.due_s()
                    self._cond.wait(None if due is None else max(0.0, due - now))
            handed_on = False
            try:
                result = self.handle(batch)
                if self.finish is not None:
                    self._handoff.put(result)  # waits while PIPELINE_DEPTH results wait
                    handed_on = True
            except Exception as exc:  # the worker outlives a bad batch
                self._failed(self.on_error, batch, exc)
            finally:
                with self._cond:
                    self.n_batches += 1
                    self.n_items += len(batch)
                    if not handed_on:
                        self._busy -= 1
                    self._cond.notify_all()
                if self.on_batch is not None:
                    try:
                        self.on_batch(len(batch))
                    except Exception:
                        pass

    def _finish_loop(self) -> None:
        assert self.finish is not None
        while (result := self._handoff.get()) is not _STOP:
            try:
                self.finish(result)
            except Exception as exc:  # the worker outlives a bad batch
                self._failed(self.on_finish_error, result, exc)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _failed(self, report: Callable[[Any, BaseException], None] | None, item: Any, exc: Exception) -> None:
        """Count a stage's exception and hand it to its error callback (which must not stop the thread)."""
        self.n_handler_errors += 1
        if report is not None:
            try:
                report(item, exc)
            except Exception:
                pass
