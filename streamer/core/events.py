"""Typed, frozen events the streamer emits to its sinks, each with a compact ``to_json()``.

``to_dict()`` is the JSON-ready form (plain Python types, floats rounded to ``FLOAT_DECIMALS``,
``type`` first); ``to_json()`` is ``json.dumps`` of it without spaces. NaN/inf are rejected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

FLOAT_DECIMALS = 5
PROB_SUM_TOLERANCE = 1e-3


def _round(x: float) -> float:
    return round(float(x), FLOAT_DECIMALS)


def _round_probs(probs: Mapping[str, float]) -> dict[str, float]:
    return {str(k): _round(v) for k, v in probs.items()}


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_probs(name: str, probs: Mapping[str, float]) -> None:
    values = [float(v) for v in probs.values()]
    if not all(math.isfinite(v) and v >= 0.0 for v in values):
        raise ValueError(f"{name} must be finite and non-negative, got {dict(probs)}")
    if abs(sum(values) - 1.0) > PROB_SUM_TOLERANCE:
        raise ValueError(f"{name} must sum to 1 (within {PROB_SUM_TOLERANCE}), sum is {sum(values)}")


@dataclass(frozen=True, slots=True)
class Estimate:
    """One smoothed emotion estimate for the window ``[t_start_s, t_end_s)`` of a stream.

    ``label`` is None exactly when ``speech`` is False. With speech, ``probs`` (smoothed) and
    ``raw_probs`` are non-empty over the same labels and each sums to 1; without speech they
    may be empty (no model run) or hold the held-over values.
    """

    type: ClassVar[str] = "estimate"

    stream: str
    seq: int
    t_start_s: float
    t_end_s: float
    label: str | None
    confidence: float
    probs: dict[str, float]
    raw_probs: dict[str, float]
    speech: bool
    speech_prob: float
    latency_ms: float
    model: str
    dropped_samples: int

    def __post_init__(self) -> None:
        if self.speech and self.label is None:
            raise ValueError("an Estimate with speech=True needs a label")
        if not self.speech and self.label is not None:
            raise ValueError(f"an Estimate with speech=False must have label=None, got {self.label!r}")
        if self.speech or self.probs or self.raw_probs:
            _check_probs("probs", self.probs)
            _check_probs("raw_probs", self.raw_probs)
            if set(self.probs) != set(self.raw_probs):
                raise ValueError(
                    f"probs and raw_probs name different labels: {sorted(self.probs)} vs {sorted(self.raw_probs)}"
                )
        if self.label is not None and self.label not in self.probs:
            raise ValueError(f"label {self.label!r} is not one of {sorted(self.probs)}")
        for name in ("t_start_s", "t_end_s", "confidence", "speech_prob", "latency_ms"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "stream": self.stream,
            "seq": int(self.seq),
            "t_start_s": _round(self.t_start_s),
            "t_end_s": _round(self.t_end_s),
            "label": self.label,
            "confidence": _round(self.confidence),
            "probs": _round_probs(self.probs),
            "raw_probs": _round_probs(self.raw_probs),
            "speech": bool(self.speech),
            "speech_prob": _round(self.speech_prob),
            "latency_ms": _round(self.latency_ms),
            "model": self.model,
            "dropped_samples": int(self.dropped_samples),
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something went wrong; ``stream`` is None for errors not tied to one stream."""

    type: ClassVar[str] = "error"

    code: str
    message: str
    stream: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "code": self.code, "message": self.message, "stream": self.stream}

    def to_json(self) -> str:
        return _dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class ReadyEvent:
    """A stream is set up: its labels, model rate, model name and window/hop lengths, and whether windows are
    gated on speech (False for models of other sounds, or with the VAD off: every window is classified)."""

    type: ClassVar[str] = "ready"

    stream: str
    labels: tuple[str, ...]
    sample_rate_hz: int
    model: str
    window_s: float
    hop_s: float
    speech_gated: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # accept any sequence, store immutably

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "stream": self.stream,
            "labels": list(self.labels),
            "sample_rate_hz": int(self.sample_rate_hz),
            "model": self.model,
            "window_s": _round(self.window_s),
            "hop_s": _round(self.hop_s),
            "speech_gated": bool(self.speech_gated),
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict())
