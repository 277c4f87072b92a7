"""Smoother: EMA arithmetic and label hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.streamer.core.smoother import Smoother, SmootherConfig

A = np.array([0.8, 0.1, 0.1])
B = np.array([0.1, 0.8, 0.1])


def test_ema_math_by_hand() -> None:
    s = Smoother(3, SmootherConfig(ema_alpha=0.25, switch_margin=0.1, switch_hops=2))
    first = s.update(np.array([0.6, 0.3, 0.1]))
    np.testing.assert_allclose(first.smoothed, [0.6, 0.3, 0.1])  # first update taken as is
    assert first.label_index == 0 and first.changed
    second = s.update(np.array([0.2, 0.2, 0.6]))
    # 0.25 * new + 0.75 * old
    np.testing.assert_allclose(second.smoothed, [0.5, 0.275, 0.225], rtol=0, atol=1e-12)
    np.testing.assert_allclose(second.raw, [0.2, 0.2, 0.6])
    assert second.confidence == pytest.approx(0.5)
    assert not second.changed
    assert second.smoothed.sum() == pytest.approx(1.0)


def test_first_update_sets_label_directly() -> None:
    s = Smoother(3)
    state = s.update(B)
    assert state.label_index == 1
    assert state.changed
    assert state.confidence == pytest.approx(0.8)


def test_one_hop_blip_does_not_switch() -> None:
    s = Smoother(3, SmootherConfig(ema_alpha=1.0, switch_margin=0.1, switch_hops=2))
    s.update(A)
    blip = s.update(B)  # B leads by 0.7 for one update only
    assert blip.label_index == 0 and not blip.changed
    assert blip.confidence == pytest.approx(0.1)  # confidence of the shown label
    back = s.update(A)
    assert back.label_index == 0 and not back.changed
    again = s.update(B)  # the count restarted: still one hop
    assert again.label_index == 0


def test_sustained_lead_switches_after_switch_hops() -> None:
    s = Smoother(3, SmootherConfig(ema_alpha=0.5, switch_margin=0.1, switch_hops=2))
    s.update(A)
    states = [s.update(B) for _ in range(4)]
    # smoothed[1] - smoothed[0]: after 1 B: 0.45-0.45=0 (no lead); 2: 0.625-0.275=0.35; 3: lead again
    assert [st.label_index for st in states] == [0, 0, 1, 1]
    assert [st.changed for st in states] == [False, False, True, False]
    np.testing.assert_allclose(states[2].smoothed, [0.1875, 0.7125, 0.1])
    assert states[2].confidence == pytest.approx(0.7125)


def test_lead_below_margin_never_switches() -> None:
    s = Smoother(2, SmootherConfig(ema_alpha=1.0, switch_margin=0.2, switch_hops=1))
    s.update(np.array([0.6, 0.4]))
    for _ in range(5):
        state = s.update(np.array([0.45, 0.55]))  # leads by 0.1 < 0.2
    assert state.label_index == 0
    assert s.update(np.array([0.35, 0.65])).label_index == 1  # lead 0.3, switch_hops=1


def test_skip_keeps_state() -> None:
    s = Smoother(3, SmootherConfig(ema_alpha=1.0, switch_margin=0.1, switch_hops=2))
    s.update(A)
    s.update(B)  # one challenger hop pending
    before = s.last
    s.skip()
    assert s.last is before
    after = s.update(B)  # skip did not break the run of consecutive updates
    assert after.label_index == 1 and after.changed


def test_reset_forgets_everything() -> None:
    s = Smoother(3)
    s.update(A)
    s.reset()
    assert s.last is None
    state = s.update(B)
    assert state.label_index == 1 and state.changed
    np.testing.assert_allclose(state.smoothed, B)


def test_returned_arrays_are_frozen_copies() -> None:
    s = Smoother(3)
    first = s.update(A)
    s.update(B)
    np.testing.assert_allclose(first.smoothed, A)
    with pytest.raises(ValueError):
        first.smoothed[0] = 1.0


@pytest.mark.parametrize(
    "probs,match",
    [
        (np.array([0.5, 0.5]), "shape"),
        (np.array([0.5, 0.6, -0.1]), "non-negative"),
        (np.array([0.5, 0.5, np.nan]), "finite"),
        (np.array([2.0, 1.0, 0.5]), "sum to 1"),
    ],
)
def test_bad_probs_rejected(probs: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Smoother(3).update(probs)


@pytest.mark.parametrize(
    "kwargs", [{"ema_alpha": 0.0}, {"ema_alpha": 1.5}, {"switch_margin": -0.1}, {"switch_hops": 0}]
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SmootherConfig(**kwargs)  # type: ignore[arg-type]
