"""RingBuffer: wrap-around, overflow accounting, chunking invariance, producer/consumer handoff."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.streamer.core.ring import RingBuffer, RingOverwrittenError


def ramp(start: int, n: int) -> np.ndarray:
    """Sample value = absolute index (exact in float32 below 2**24)."""
    return np.arange(start, start + n, dtype=np.float32)


def unread(ring: RingBuffer) -> int:
    return ring.total_written - ring.read_position


def take(ring: RingBuffer, max_samples: int | None = None) -> tuple[int, np.ndarray]:
    """What the runtime does with a ring: copy unread audio by absolute index, then mark it read."""
    start = ring.read_position
    end = ring.total_written if max_samples is None else min(ring.total_written, start + max_samples)
    samples = ring.read_range(start, end)
    ring.mark_read(end)
    return start, samples


def test_wraparound_keeps_newest_in_order() -> None:
    ring = RingBuffer(8)
    ring.push(ramp(0, 5))
    take(ring)
    ring.push(ramp(5, 6))  # wraps: buffer holds 3..10
    assert ring.total_written == 11
    assert ring.oldest_sample == 3
    np.testing.assert_array_equal(ring.read_range(3, 11), ramp(3, 8))
    np.testing.assert_array_equal(ring.read_range(4, 11), ramp(4, 7))
    np.testing.assert_array_equal(ring.read_range(6, 9), [6, 7, 8])
    assert ring.dropped_samples == 0  # 0..4 were read before being overwritten


def test_overflow_drops_oldest_unread_and_counts() -> None:
    ring = RingBuffer(10)
    assert ring.push(ramp(0, 7)) == 0
    assert ring.push(ramp(7, 6)) == 3  # 13 written, capacity 10: samples 0..2 lost unread
    assert ring.dropped_samples == 3
    assert unread(ring) == 10
    start, samples = take(ring)
    assert start == 3 and start + len(samples) == 13
    np.testing.assert_array_equal(samples, ramp(3, 10))
    assert unread(ring) == 0
    # A chunk longer than the capacity keeps its newest samples; the rest are dropped unread.
    assert ring.push(ramp(13, 25)) == 15
    assert ring.dropped_samples == 18
    assert ring.total_written == 38
    start, samples = take(ring, 4)
    assert start == 28
    np.testing.assert_array_equal(samples, ramp(28, 4))
    assert unread(ring) == 6


def test_read_range_errors() -> None:
    ring = RingBuffer(4)
    ring.push(ramp(0, 10))
    with pytest.raises(RingOverwrittenError, match=r"\[6, 10\)"):
        ring.read_range(5, 8)
    with pytest.raises(ValueError, match="past"):
        ring.read_range(8, 11)
    with pytest.raises(ValueError):
        ring.read_range(-1, 2)
    with pytest.raises(ValueError):
        ring.read_range(9, 8)
    np.testing.assert_array_equal(ring.read_range(6, 10), ramp(6, 4))


def test_mark_read_and_out_buffer() -> None:
    ring = RingBuffer(6)
    ring.push(ramp(0, 5))
    ring.mark_read(4)
    assert unread(ring) == 1
    ring.push(ramp(5, 4))  # oldest kept = 3; only sample 3 was... already read -> no drop
    assert ring.dropped_samples == 0
    ring.push(ramp(9, 2))  # oldest kept = 5; unread 4 is lost
    assert ring.dropped_samples == 1
    out = np.full(3, -1.0, np.float32)
    res = ring.read_range(7, 10, out=out)
    assert res is out
    np.testing.assert_array_equal(out, [7, 8, 9])
    with pytest.raises(ValueError, match="beyond"):
        ring.mark_read(12)


def test_reset_restarts_counters() -> None:
    ring = RingBuffer(4)
    ring.push(ramp(0, 9))
    ring.reset()
    assert (ring.total_written, ring.dropped_samples, unread(ring), ring.oldest_sample) == (0, 0, 0, 0)
    ring.push(ramp(0, 2))  # absolute indices start again at 0
    np.testing.assert_array_equal(ring.read_range(0, 2), ramp(0, 2))


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 64),
    total=st.integers(0, 300),
    cuts=st.lists(st.integers(0, 300), max_size=25),
    data=st.data(),
)
def test_random_chunking_equals_one_push(
    capacity: int, total: int, cuts: list[int], data: st.DataObject
) -> None:
    audio = np.random.default_rng(total).standard_normal(total).astype(np.float32)
    edges = sorted({0, total, *(c for c in cuts if c <= total)})
    chunked = RingBuffer(capacity)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        chunked.push(audio[a:b])
    whole = RingBuffer(capacity)
    whole.push(audio)

    assert chunked.total_written == whole.total_written == total
    assert chunked.dropped_samples == whole.dropped_samples == max(0, total - capacity)
    oldest = max(0, total - capacity)
    start = data.draw(st.integers(oldest, total))
    end = data.draw(st.integers(start, total))
    np.testing.assert_array_equal(chunked.read_range(start, end), audio[start:end])
    np.testing.assert_array_equal(whole.read_range(start, end), audio[start:end])


def test_producer_consumer_threads_exact_accounting() -> None:
    total = 400_000  # < 2**24, so ramp values are exact
    capacity = 2_048
    ring = RingBuffer(capacity)
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 1_500, size=total).tolist()
    done = threading.Event()
    errors: list[str] = []
    popped_total = 0
    expected_next = 0
    gaps = 0

    def producer() -> None:
        pos = 0
        for n in sizes:
            n = min(n, total - pos)
            if n == 0:
                break
            ring.push(ramp(pos, n))
            pos += n
        done.set()

    def consumer() -> None:
        nonlocal popped_total, expected_next, gaps
        while True:
            finished = done.is_set()
            try:
                start, samples = take(ring)
            except RingOverwrittenError:  # overwritten between read_position and the copy: read anew
                continue
            n = samples.shape[0]
            if n:
                if start < expected_next:
                    errors.append(f"overlap at {start}")
                gaps += start - expected_next
                if not np.array_equal(samples, ramp(start, n)):
                    errors.append(f"corrupt chunk at {start}")
                expected_next = start + n
                popped_total += n
            elif finished:
                return

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert ring.total_written == total
    assert expected_next == total
    assert popped_total + gaps == total  # every sample was read once or skipped
    # every skipped sample was counted as dropped (a sample overwritten between the copy and
    # mark_read is counted as dropped too, though it was read: that is the ring's contract)
    assert gaps <= ring.dropped_samples
    assert popped_total > 0


def test_scaled_int16_push_equals_float_push() -> None:
    """``push(int16, scale)`` stores exactly what pushing the scaled float32 copy stores, across the wrap."""
    rng = np.random.default_rng(3)
    a, b = RingBuffer(1000), RingBuffer(1000)
    for n in (320, 700, 1, 999, 2500, 320):
        pcm = rng.integers(-32768, 32768, n).astype("<i2")
        assert a.push(pcm, scale=1 / 32768) == b.push(pcm.astype(np.float32) * np.float32(1 / 32768))
    end = a.total_written
    np.testing.assert_array_equal(a.read_range(end - 1000, end), b.read_range(end - 1000, end))
    assert a.dropped_samples == b.dropped_samples
