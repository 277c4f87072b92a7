"""One model call for a batch of windows: ``classify(classifier, jobs)`` -> one ``JobResult`` per job.

Pure computation (the classifier's ``predict``); a backend error fails every job of that batch
and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from emostream.models.classifier import Classifier


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


def classify(classifier: Classifier, jobs: list[WindowJob]) -> list[JobResult]:
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
