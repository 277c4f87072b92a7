"""Runtime: many streams at once, each its own estimates in order; sinks isolated; limits; VAD gating; errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from oracle import offline_window_probs

from emostream.models.modelfile import load_classifier
from emostream.streamer.core.batcher import BatchConfig
from emostream.streamer.core.events import ErrorEvent, Estimate
from emostream.streamer.core.vad import VadConfig
from emostream.streamer.runtime.config import RuntimeConfig, StreamLimitError
from emostream.streamer.runtime.runtime import Runtime

SR = 16000
NO_VAD = RuntimeConfig(vad=VadConfig(enabled=False))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path):
    return load_classifier(tiny_model_dir)


def noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * level).astype(np.float32)


class Collect:
    def __init__(self) -> None:
        self.events: list[Estimate] = []
        self.lock = threading.Lock()

    def publish(self, event: Estimate) -> None:
        with self.lock:
            self.events.append(event)


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def publish(self, event: Estimate) -> None:
        self.calls += 1
        raise RuntimeError("sink is broken")


def test_many_streams_at_once_each_get_their_own_estimates_in_order(classifier) -> None:
    audios = {f"s{k}": noise(3.0 + 0.7 * k, seed=k) for k in range(4)}
    per_stream: dict[str, list[Estimate]] = {k: [] for k in audios}
    everything, broken = Collect(), Exploding()
    runtime = Runtime(classifier, NO_VAD)
    runtime.add_sink(broken)  # raises on every event: must not stop the sink after it
    runtime.add_sink(everything)
    handles = {k: runtime.open_stream(k, SR, 1, on_estimate=per_stream[k].append) for k in audios}
    with runtime:

        def feed(k: str) -> None:
            rng = np.random.default_rng(hash(k) % 1000)
            x, pos = audios[k], 0
            while pos < len(x):
                n = int(rng.integers(100, 6000))
                handles[k].push(x[pos : pos + n])
                pos += n
            assert handles[k].flush(timeout_s=60)

        threads = [threading.Thread(target=feed, args=(k,)) for k in audios]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for k, x in audios.items():
        events = per_stream[k]
        assert [e.seq for e in events] == list(range(len(events)))
        assert all(e.stream == k for e in events)
        ref = offline_window_probs(x, classifier, SR)
        got = np.array([[e.raw_probs[label] for label in classifier.labels] for e in events])
        np.testing.assert_allclose(got, ref, atol=1e-4)
        assert [e for e in everything.events if e.stream == k] == events  # the sink saw the same, in order
    assert broken.calls == len(everything.events)
    stats = runtime.stats()
    assert stats.sink_errors == broken.calls and stats.windows_published == len(everything.events)
    assert stats.mean_batch >= 1.0


def test_limits_and_bad_streams(classifier) -> None:
    runtime = Runtime(classifier, RuntimeConfig(max_streams=2, vad=VadConfig(enabled=False)))
    runtime.open_stream("a", SR, 1)
    with pytest.raises(ValueError, match="already open"):
        runtime.open_stream("a", SR, 1)
    with pytest.raises(ValueError):
        runtime.open_stream("b", 0, 1)
    with pytest.raises(ValueError):
        runtime.open_stream("b", SR, 0)
    runtime.open_stream("b", 48000, 2)
    with pytest.raises(StreamLimitError):
        runtime.open_stream("c", SR, 1)
    runtime.close_stream("a")
    runtime.close_stream("a")  # idempotent
    handle = runtime.open_stream("c", SR, 1)
    with pytest.raises(ValueError, match="NaN"):
        handle.push(np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(ValueError):
        handle.push(np.zeros((100, 2), dtype=np.float32))  # 2 channels on a mono stream
    with pytest.raises(ValueError, match="feature hop"):
        Runtime(classifier, RuntimeConfig(hop_s=0.015))


def test_vad_gates_silence(classifier) -> None:
    runtime = Runtime(classifier, RuntimeConfig(vad=VadConfig(method="energy")))
    events: list[Estimate] = []
    loud = noise(2.0, 1, level=0.3)
    audio = np.concatenate([np.zeros(2 * SR, dtype=np.float32), loud])
    with runtime:
        h = runtime.open_stream("x", SR, 1, on_estimate=events.append)
        h.push(audio)
        assert h.flush()
    assert [e.speech for e in events] == [False, False, True, True]
    assert events[0].label is None and events[0].probs == {} and events[0].speech_prob == 0.0
    assert events[2].label in classifier.labels and events[3].speech_prob == 1.0
    # the speech windows equal the offline reference: skipped windows do not disturb the features
    ref = offline_window_probs(audio, classifier, SR)
    np.testing.assert_allclose([events[3].raw_probs[label] for label in classifier.labels], ref[3], atol=1e-4)
    assert runtime.stats().windows_nonspeech == 2


class FailsOnce:
    """Wraps a classifier; the first predict raises."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.labels, self.feature_config, self.spec, self.name = inner.labels, inner.feature_config, inner.spec, "flaky"
        self.failed = False

    def predict(self, logmel: np.ndarray) -> np.ndarray:
        if not self.failed:
            self.failed = True
            raise RuntimeError("backend fell over")
        return self.inner.predict(logmel)


def test_backend_error_fails_one_batch_and_the_stream_goes_on(classifier) -> None:
    runtime = Runtime(
        FailsOnce(classifier), RuntimeConfig(vad=VadConfig(enabled=False), batching=BatchConfig(max_batch=1))
    )
    events: list[Estimate] = []
    errors: list[ErrorEvent] = []
    with runtime:
        h = runtime.open_stream("x", SR, 1, on_estimate=events.append, on_error=errors.append)
        h.push(noise(3.0, 5))
        assert h.flush()
    assert [e.code for e in errors] == ["inference_failed"]
    assert "backend fell over" in errors[0].message and errors[0].stream == "x"
    assert [e.seq for e in events] == [1, 2]
    assert runtime.stats().window_errors == 1


def test_close_stream_drops_queued_windows_and_releases_flush(classifier) -> None:
    runtime = Runtime(classifier, NO_VAD)  # not started: windows stay queued
    events: list[Estimate] = []
    h = runtime.open_stream("x", SR, 1, on_estimate=events.append)
    assert h.push(noise(3.0, 2)) == 3
    assert not h.flush(timeout_s=0.2)  # runtime not running: cannot finish
    runtime.close_stream("x")
    with runtime:
        pass  # the worker drains the queue: closed stream, nothing published
    assert events == [] and h.closed
    with pytest.raises(RuntimeError, match="closed"):
        h.push(noise(0.1, 3))


def test_a_worker_that_fell_behind_the_ring_reports_the_lost_windows_and_resynchronises(classifier) -> None:
    """Windows whose audio the ring no longer holds get ``audio_overwritten``; the next ones equal offline."""
    runtime = Runtime(classifier, RuntimeConfig(vad=VadConfig(enabled=False), ring_s=7.0))  # not started
    events: list[Estimate] = []
    errors: list[ErrorEvent] = []
    h = runtime.open_stream("x", SR, 1, on_estimate=events.append, on_error=errors.append)
    audio = noise(12.0, 9)
    assert h.push(audio) == 12  # the ring keeps the last 7 s: windows ending before 10 s lost audio
    with runtime:
        assert h.flush()
    assert [e.code for e in errors] == ["audio_overwritten"] * 9
    assert [e.seq for e in events] == [9, 10, 11]
    ref = offline_window_probs(audio, classifier, SR)
    for e in events:
        np.testing.assert_allclose([e.raw_probs[k] for k in classifier.labels], ref[e.seq], atol=1e-4)
    stats = runtime.stats()
    assert stats.window_errors == 9 and stats.windows_published == 3


@pytest.mark.parametrize("pipeline", [True, False])
def test_pipelined_and_single_thread_runtimes_give_the_offline_windows(classifier, pipeline: bool) -> None:
    """VAD and log-mel on one thread, model and publication on another (the default), or all on
    one: many streams pushed in uneven chunks, with silence the VAD rejects, give every window's
    offline probabilities, in order per stream, and the same speech decisions either way."""
    config = RuntimeConfig(vad=VadConfig(method="energy"), batching=BatchConfig(max_batch=3), pipeline=pipeline)
    audios = {
        f"s{k}": np.concatenate([noise(1.0 + 0.5 * k, seed=k, level=0.3), np.zeros(2 * SR, np.float32),
                                 noise(1.7, seed=10 + k, level=0.2)])
        for k in range(5)
    }
    got: dict[str, list[Estimate]] = {k: [] for k in audios}
    runtime = Runtime(classifier, config)
    with runtime:
        handles = {k: runtime.open_stream(k, SR, 1, on_estimate=got[k].append) for k in audios}
        rng = np.random.default_rng(0)
        pos = dict.fromkeys(audios, 0)
        while any(pos[k] < len(a) for k, a in audios.items()):
            for k, a in audios.items():
                n = int(rng.integers(100, 9000))
                if pos[k] < len(a):
                    handles[k].push(a[pos[k] : pos[k] + n])
                    pos[k] += n
        for h in handles.values():
            assert h.flush()
    for k, audio in audios.items():
        ref = offline_window_probs(audio, classifier, SR)
        events = got[k]
        assert [e.seq for e in events] == list(range(len(ref)))
        speech = [e for e in events if e.speech]
        assert 0 < len(speech) < len(events)  # the silence was rejected, the rest classified
        for e in speech:
            np.testing.assert_allclose([e.raw_probs[label] for label in classifier.labels], ref[e.seq], atol=1e-4)
