"""Dynamic batching: the policy (deterministic), batched equals one by one, a failing batch fails only itself."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from emostream.models.modelfile import load_classifier
from emostream.streamer.core.batcher import BatchConfig, Batcher
from emostream.streamer.core.classify import JobResult, WindowJob, classify
from emostream.streamer.runtime.worker import BatchWorker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def job(i: int, stream: str = "s", n_frames: int = 40, seed: int | None = None) -> WindowJob:
    rng = np.random.default_rng(i if seed is None else seed)
    logmel = rng.standard_normal((64, n_frames)).astype(np.float32)
    return WindowJob(stream, i, (i + 1) * 16000, logmel, arrival_s=float(i))


def test_batcher_policy_is_deterministic() -> None:
    b: Batcher[int] = Batcher(BatchConfig(max_batch=3, max_wait_ms=10.0, adaptive=False))
    assert b.due_s() is None and b.pop(0.0) == []
    b.push(1, now_s=100.0)
    b.push(2, now_s=100.004)
    assert b.due_s() == pytest.approx(100.010)
    assert b.pop(100.009) == []  # not yet: waiting for more
    assert b.pop(100.010) == [1, 2]  # max_wait after the FIRST item
    for i in range(7):
        b.push(10 + i, now_s=200.0)
    assert b.ready(200.0)  # full: due at once
    assert b.pop(200.0) == [10, 11, 12]
    assert b.pop(200.0) == [13, 14, 15]
    assert b.pop(200.0) == []  # one left, not due
    assert b.pop(200.0, force=True) == [16]
    with pytest.raises(ValueError):
        BatchConfig(max_batch=0)
    with pytest.raises(ValueError):
        BatchConfig(max_wait_ms=-1.0)


def test_adaptive_batcher_waits_only_when_more_windows_are_due() -> None:
    cfg = BatchConfig(max_batch=16, max_wait_ms=20.0, adaptive=True, rate_tau_s=1.0)
    slow: Batcher[int] = Batcher(cfg)
    for i in range(10):  # one window a second (a single stream): never held back
        slow.push(i, now_s=float(i))
        assert slow.ready(float(i)), slow.rate_per_s
        assert slow.pop(float(i)) == [i]
    assert 0.5 < slow.rate_per_s < 1.6

    busy: Batcher[int] = Batcher(cfg)
    t = 0.0
    for i in range(1750):  # 175 windows/s for 10 s: 3.5 expected within 20 ms, so batches of 4
        t = i / 175.0
        busy.push(i, now_s=t)
        busy.pop(t, force=True)
    assert busy.rate_per_s == pytest.approx(175.0, rel=0.05)
    for k, dt in enumerate((0.004, 0.008, 0.012)):
        busy.push(k, now_s=t + dt)
        assert not busy.ready(t + dt)  # waiting for the batch to fill ...
    assert busy.due_s() == pytest.approx(t + 0.024)  # ... at most max_wait after the first
    busy.push(3, now_s=t + 0.016)
    assert busy.ready(t + 0.016)  # the 4th: due at once
    assert busy.pop(t + 0.016) == [0, 1, 2, 3]

    fixed: Batcher[int] = Batcher(BatchConfig(max_batch=16, max_wait_ms=20.0, adaptive=False))
    fixed.push(1, now_s=0.0)
    assert not fixed.ready(0.0) and fixed.ready(0.02)  # not adaptive: always the full wait


def test_batched_equals_one_by_one(tiny_model_dir: Path) -> None:
    clf = load_classifier(tiny_model_dir)
    jobs = [job(i) for i in range(6)]
    batched = classify(clf, jobs)
    single = [classify(clf, [j])[0] for j in jobs]
    assert all(r.ok for r in batched + single)
    for a, b in zip(batched, single, strict=True):
        assert a.job is b.job
        assert a.probs is not None and b.probs is not None
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        assert a.probs.sum() == pytest.approx(1.0, abs=1e-5)


class FlakyClassifier:
    """Probabilities from the window's mean; raises when a batch holds a job with seq in ``poison``."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.batch_sizes: list[int] = []

    def predict(self, logmel: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(logmel))
        seqs = {int(round(x[0, 0])) for x in logmel}
        if seqs & self.poison:
            raise RuntimeError("backend exploded")
        p = np.full((len(logmel), 2), 0.5, dtype=np.float32)
        p[:, 0] = [x[0, 0] / 100.0 for x in logmel]
        p[:, 1] = 1.0 - p[:, 0]
        return p


def seq_job(i: int) -> WindowJob:
    logmel = np.full((4, 3), float(i), dtype=np.float32)
    return WindowJob("s", i, i, logmel, float(i))


def test_a_failing_batch_fails_only_its_jobs() -> None:
    clf = FlakyClassifier(poison={3})
    results: list[JobResult] = []
    done = threading.Event()

    def on_result(r: JobResult) -> None:
        results.append(r)
        if len(results) == 10:
            done.set()

    def handle(batch: list[WindowJob]) -> None:  # what the runtime's batch handler does: classify(...)
        for r in classify(clf, batch):
            on_result(r)

    worker: BatchWorker[WindowJob] = BatchWorker(BatchConfig(max_batch=2, max_wait_ms=1000.0, adaptive=False), handle)
    worker.submit_many([seq_job(i) for i in range(10)])  # queued before the worker starts: (0, 1), (2, 3), ...
    worker.start()
    assert done.wait(10)
    worker.stop()
    assert [r.job.seq for r in results] == list(range(10))  # every job answered, in order
    failed = [r.job.seq for r in results if not r.ok]
    assert failed == [2, 3]  # the batch (2, 3) held the poison; later batches went on
    assert "backend exploded" in (results[3].error or "")
    assert clf.batch_sizes == [2] * 5
    assert results[9].probs is not None and results[9].probs[0] == pytest.approx(0.09)


def test_worker_survives_a_handler_error_and_drains_on_stop() -> None:
    seen: list[list[int]] = []
    errors: list[str] = []

    def handle(batch: list[int]) -> None:
        if 0 in batch:
            raise ValueError("bad batch")
        seen.append(batch)

    worker: BatchWorker[int] = BatchWorker(
        BatchConfig(max_batch=4, max_wait_ms=1e6, adaptive=False),
        handle,
        on_error=lambda batch, exc: errors.append(str(exc)),
    )
    worker.start()
    worker.submit_many([0, 1, 2, 3])  # full batch: handled at once, and fails
    worker.submit_many([4, 5])  # not due for a long time...
    assert not worker.wait_idle(0.2)
    worker.stop(drain=True)  # ...but stop drains it
    assert errors == ["bad batch"]
    assert seen == [[4, 5]]
    assert worker.n_handler_errors == 1 and worker.n_items == 6


def test_two_stage_worker_keeps_order_reports_each_stage_and_drains() -> None:
    """With ``finish``, batches go through ``handle`` on one thread and ``finish`` on another, in
    order; an error in either stage is reported for its batch only; ``wait_idle`` and ``stop``
    wait for the second stage too."""
    finished: list[list[int]] = []
    errors: list[tuple[str, str]] = []
    threads: set[str] = set()
    gate = threading.Event()

    def prepare(batch: list[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        if 0 in batch:
            raise ValueError("bad prepare")
        return batch

    def finish(batch: list[int]) -> None:
        threads.add(threading.current_thread().name + "/finish")
        gate.wait(5)
        if 5 in batch:
            raise ValueError("bad finish")
        finished.append(batch)

    worker: BatchWorker[int] = BatchWorker(
        BatchConfig(max_batch=2, max_wait_ms=1e6, adaptive=False),
        prepare,
        on_error=lambda batch, exc: errors.append(("prepare", str(exc))),
        finish=finish,
        on_finish_error=lambda result, exc: errors.append(("finish", f"{result}: {exc}")),
        name="w",
    )
    worker.start()
    worker.submit_many([0, 1, 2, 3, 4, 5, 6, 7])
    assert not worker.wait_idle(0.3)  # the second stage is held at the gate
    gate.set()
    assert worker.wait_idle(5)
    worker.submit_many([8])  # not due for a long time: stop drains it through both stages
    worker.stop(drain=True)
    assert finished == [[2, 3], [6, 7], [8]]
    assert errors == [("prepare", "bad prepare"), ("finish", "[4, 5]: bad finish")]
    assert threads == {"w", "w-2/finish"}
    assert worker.n_handler_errors == 2 and worker.n_items == 9
