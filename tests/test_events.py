"""Events: JSON shape, rounding, round-trip through json.loads, validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from emostream.streamer.core.events import ErrorEvent, Estimate, ReadyEvent

LABELS = ("angry", "happy", "neutral", "sad")
KEYS = [
    "type",
    "stream",
    "seq",
    "t_start_s",
    "t_end_s",
    "label",
    "confidence",
    "probs",
    "raw_probs",
    "speech",
    "speech_prob",
    "latency_ms",
    "model",
    "dropped_samples",
]


def make_estimate(**overrides: object) -> Estimate:
    rng = np.random.default_rng(11)
    smoothed = rng.dirichlet(np.ones(len(LABELS))).astype(np.float32)
    raw = rng.dirichlet(np.ones(len(LABELS)))
    fields: dict[str, object] = dict(
        stream="mic-0",
        seq=42,
        t_start_s=1.0,
        t_end_s=6.0,
        label=LABELS[int(np.argmax(smoothed))],
        confidence=np.float32(smoothed.max()),
        probs={k: np.float32(v) for k, v in zip(LABELS, smoothed, strict=True)},
        raw_probs={k: float(v) for k, v in zip(LABELS, raw, strict=True)},
        speech=True,
        speech_prob=0.987654321,
        latency_ms=12.3456789,
        model="cnn-small",
        dropped_samples=160,
    )
    fields.update(overrides)
    return Estimate(**fields)  # type: ignore[arg-type]


def test_estimate_json_round_trip() -> None:
    est = make_estimate()
    text = est.to_json()
    assert " " not in text.replace("mic-0", "")  # compact separators
    d = json.loads(text)
    assert list(d) == KEYS
    assert d == est.to_dict()
    assert d["type"] == "estimate" == Estimate.type
    assert d["seq"] == 42 and d["dropped_samples"] == 160
    assert d["speech_prob"] == 0.98765 and d["latency_ms"] == 12.34568
    assert list(d["probs"]) == list(LABELS)
    assert sum(d["probs"].values()) == pytest.approx(1.0, abs=len(LABELS) * 5e-6)
    assert sum(d["raw_probs"].values()) == pytest.approx(1.0, abs=len(LABELS) * 5e-6)
    assert d["label"] == max(d["probs"], key=d["probs"].get)
    for v in d["probs"].values():
        assert v == round(v, 5)


def test_non_speech_estimate_has_null_label() -> None:
    est = make_estimate(label=None, speech=False, speech_prob=0.1)
    d = json.loads(est.to_json())
    assert d["label"] is None and d["speech"] is False
    empty = make_estimate(label=None, speech=False, probs={}, raw_probs={}, confidence=0.0)
    assert json.loads(empty.to_json())["probs"] == {}


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"speech": False}, "label=None"),
        ({"label": None}, "needs a label"),
        ({"label": "bored"}, "not one of"),
        ({"probs": {"angry": 0.5, "happy": 0.6, "neutral": 0.0, "sad": 0.0}}, "sum to 1"),
        ({"raw_probs": {"angry": 1.0}}, "different labels"),
        ({"latency_ms": float("nan")}, "finite"),
    ],
)
def test_estimate_validation(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_estimate(**overrides)


def test_estimate_is_frozen_and_slotted() -> None:
    est = make_estimate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.seq = 1  # type: ignore[misc]
    assert not hasattr(est, "__dict__")


def test_ready_and_error_events() -> None:
    ready = ReadyEvent(
        stream="s1", labels=list(LABELS), sample_rate_hz=16000, model="m", window_s=5.0, hop_s=1 / 3
    )
    assert ready.labels == LABELS
    d = json.loads(ready.to_json())
    assert d == {
        "type": "ready",
        "stream": "s1",
        "labels": list(LABELS),
        "sample_rate_hz": 16000,
        "model": "m",
        "window_s": 5.0,
        "hop_s": 0.33333,
        "speech_gated": True,
    }
    assert json.loads(dataclasses.replace(ready, speech_gated=False).to_json())["speech_gated"] is False
    err = ErrorEvent(code="bad_audio", message="NaN in f32le audio", stream=None)
    assert json.loads(err.to_json()) == {
        "type": "error",
        "code": "bad_audio",
        "message": "NaN in f32le audio",
        "stream": None,
    }
