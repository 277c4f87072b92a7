"""Windower: window ends depend only on the sample count, never on the chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.models.windows import window_ends
from emostream.streamer.core.windower import Windower


def test_first_window_after_first_hop() -> None:
    w = Windower(window_samples=80_000, hop_samples=8_000)
    assert w.push(7_999) == []
    assert w.push(1) == [8_000]
    assert w.push(24_000) == [16_000, 24_000, 32_000]
    assert w.push(7_999) == []
    assert w.total_samples == 39_999
    assert w.push(0) == []
    assert w.push(1) == [40_000]


@settings(max_examples=80, deadline=None)
@given(
    window=st.integers(1, 500),
    data=st.data(),
    chunks=st.lists(st.integers(0, 700), max_size=60),
)
def test_random_chunking_gives_expected_ends(window: int, data: st.DataObject, chunks: list[int]) -> None:
    hop = data.draw(st.integers(1, window))
    w = Windower(window, hop)
    ends: list[int] = []
    for n in chunks:
        ends += w.push(n)
    total = sum(chunks)
    assert ends == [hop * k for k in range(1, total // hop + 1)]
    assert w.total_samples == total
    tail = w.flush()
    assert tail == ([total] if total % hop else [])
    assert ends + tail == window_ends(total, hop)  # the offline replay of the same policy


def test_flush_emits_final_partial_hop_once() -> None:
    w = Windower(10, 4)
    assert w.push(10) == [4, 8]
    assert w.flush() == [10]
    with pytest.raises(RuntimeError, match="reset"):
        w.push(1)
    with pytest.raises(RuntimeError, match="reset"):
        w.flush()
    w.reset()
    assert w.push(3) == []
    assert w.flush() == [3]  # shorter than one hop: one window ending at the last sample
    w.reset()
    assert w.push(8) == [4, 8]
    assert w.flush() == []
    w.reset()
    assert w.flush() == []


def test_reset_restarts_at_zero() -> None:
    w = Windower(10, 4)
    assert w.push(9) == [4, 8]
    w.reset()
    assert w.total_samples == 0
    assert w.push(4) == [4]


@pytest.mark.parametrize("window,hop", [(0, 1), (10, 0), (10, 11), (-5, 2)])
def test_invalid_sizes(window: int, hop: int) -> None:
    with pytest.raises(ValueError):
        Windower(window, hop)


def test_negative_push_rejected() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Windower(10, 5).push(-1)
