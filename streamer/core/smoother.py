"""Temporal smoothing of per-window class probabilities with a hysteresis on the shown label.

EMA: ``smoothed = ema_alpha * probs + (1 - ema_alpha) * smoothed_prev`` (``ema_alpha`` is the
weight of the newest window; 1.0 disables smoothing). The first update takes ``probs`` as is.

Hysteresis: the first update sets the label to the argmax directly. Afterwards the label moves
to class ``c`` only when ``c`` is the smoothed argmax and leads the current label's smoothed
probability by at least ``switch_margin`` on ``switch_hops`` consecutive updates, the same
challenger each time (a different challenger restarts the count at 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROB_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class SmootherConfig:
    ema_alpha: float = 0.5
    switch_margin: float = 0.1
    switch_hops: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if not 0.0 <= self.switch_margin <= 1.0:
            raise ValueError(f"switch_margin must be in [0, 1], got {self.switch_margin}")
        if self.switch_hops < 1:
            raise ValueError(f"switch_hops must be >= 1, got {self.switch_hops}")


@dataclass(frozen=True, slots=True)
class SmoothedState:
    """Result of one ``Smoother.update``. Arrays are read-only float64 copies, shape (n_classes,).

    ``confidence`` is the smoothed probability of the shown label, which during hysteresis can
    be below another class's. ``changed`` is True when the label differs from the previous
    update's (True on the first update).
    """

    raw: np.ndarray
    smoothed: np.ndarray
    label_index: int
    confidence: float
    changed: bool


def _frozen_copy(x: np.ndarray | list[float]) -> np.ndarray:
    y = np.array(x, dtype=np.float64)
    y.setflags(write=False)
    return y


class Smoother:
    """EMA + hysteresis over one stream's probability vectors."""

    def __init__(self, n_classes: int, config: SmootherConfig | None = None) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.config = config if config is not None else SmootherConfig()
        self.reset()

    def reset(self) -> None:
        self._smoothed = [0.0] * self.n_classes  # a list: a handful of classes is faster in Python than numpy
        self._n_updates = 0
        self._label_index = -1
        self._challenger_index = -1
        self._challenger_hops = 0
        self._last: SmoothedState | None = None

    @property
    def last(self) -> SmoothedState | None:
        """The most recent update's result (None before the first update)."""
        return self._last

    def update(self, probs: np.ndarray) -> SmoothedState:
        """Fold in one window's probabilities (shape (n_classes,), non-negative, summing to 1)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (self.n_classes,):
            raise ValueError(f"probs must have shape ({self.n_classes},), got {p.shape}")
        values: list[float] = p.tolist()
        total = sum(values)  # NaN or infinite when any element is
        if not math.isfinite(total) or min(values) < 0.0:
            raise ValueError(f"probs must be finite and non-negative, got {p}")
        if abs(total - 1.0) > PROB_SUM_TOLERANCE:
            raise ValueError(f"probs must sum to 1 (within {PROB_SUM_TOLERANCE}), sum is {total}")

        cfg = self.config
        if self._n_updates == 0:
            smoothed = values
        else:
            keep, alpha = 1.0 - cfg.ema_alpha, cfg.ema_alpha
            smoothed = [keep * s + alpha * v for s, v in zip(self._smoothed, values, strict=True)]
        self._smoothed = smoothed
        self._n_updates += 1

        previous = self._label_index
        leader = max(range(self.n_classes), key=smoothed.__getitem__)  # the first of equals, as argmax
        if previous < 0:
            self._label_index = leader
        elif leader != previous and smoothed[leader] - smoothed[previous] >= cfg.switch_margin:
            if leader == self._challenger_index:
                self._challenger_hops += 1
            else:
                self._challenger_index = leader
                self._challenger_hops = 1
            if self._challenger_hops >= cfg.switch_hops:
                self._label_index = leader
                self._challenger_index = -1
                self._challenger_hops = 0
        else:
            self._challenger_index = -1
            self._challenger_hops = 0

        state = SmoothedState(
            raw=_frozen_copy(values),
            smoothed=_frozen_copy(smoothed),
            label_index=self._label_index,
            confidence=smoothed[self._label_index],
            changed=self._label_index != previous,
        )
        self._last = state
        return state

    def skip(self) -> None:
        """A non-speech window: the EMA, the label and any pending switch count are held unchanged.

        Speech after a pause therefore continues from the pre-pause state instead of restarting;
        skipped windows do not break a challenger's run of consecutive updates.
        """
