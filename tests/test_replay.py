"""Streaming replay equals offline inference on the same audio; random chunkings give the same windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from oracle import offline_window_probs
from wsutil import ESTIMATE_KEYS

from emostream.models.modelfile import load_classifier
from emostream.models.windows import window_ends
from emostream.streamer.core.resample import resample
from emostream.streamer.core.vad import VadConfig
from emostream.streamer.runtime.config import RuntimeConfig
from emostream.streamer.runtime.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REQUIRED = set(ESTIMATE_KEYS)  # the fields docs/protocol.md requires of every estimate
HOP_S = 1.0


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path):
    return load_classifier(tiny_model_dir)


def synthetic(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """Seeded noise bursts and tones, (frames, channels)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.empty((n, channels), dtype=np.float32)
    for c in range(channels):
        tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t * (1 + 0.1 * np.sin(t)))
        bursts = rng.standard_normal(n) * 0.2 * (np.sin(2 * np.pi * 0.4 * t + c) > 0)
        x[:, c] = tone + bursts
    return x


def replay(path: Path, model: Path, out: Path) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "emostream.streamer",
        "replay",
        str(path),
        "--model",
        str(model),
        "--no-vad",
        "--hop-s",
        str(HOP_S),
        "--jsonl",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "windows" in proc.stderr and "Traceback" not in proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("rate, channels, seconds", [(44100, 2, 7.3), (48000, 1, 6.1), (16000, 1, 6.5)])
def test_replay_equals_offline(
    tmp_path: Path, tiny_model_dir: Path, classifier, rate: int, channels: int, seconds: float
) -> None:
    path = tmp_path / f"clip_{rate}_{channels}.wav"
    sf.write(path, synthetic(seconds, rate, channels, seed=rate), rate, subtype="FLOAT")
    events = replay(path, tiny_model_dir, tmp_path / "out.jsonl")

    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1, dtype=np.float32)
    sr = classifier.feature_config.sample_rate_hz
    if file_rate != sr:
        mono = resample(mono, file_rate, sr)  # the offline path: the whole recording at once
    hop = round(HOP_S * sr)
    ends = window_ends(len(mono), hop)
    window = classifier.feature_config.window_samples
    assert [e["seq"] for e in events] == list(range(len(ends)))
    assert [e["t_end_s"] for e in events] == pytest.approx([end / sr for end in ends], abs=1e-5)
    assert [e["t_start_s"] for e in events] == pytest.approx(
        [max(0, end - window) / sr for end in ends], abs=1e-5
    )
    for e in events:
        assert REQUIRED <= set(e), REQUIRED - set(e)
        assert e["type"] == "estimate" and e["stream"] == path.name and e["speech"] is True
        assert sum(e["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert e["label"] in classifier.labels and e["latency_ms"] >= 0
    ref = offline_window_probs(mono, classifier, hop)
    got = np.array([[e["raw_probs"][label] for label in classifier.labels] for e in events])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def stream_in_chunks(classifier, audio: np.ndarray, rate: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    events: list = []
    runtime = Runtime(classifier, RuntimeConfig(hop_s=HOP_S, vad=VadConfig(enabled=False)))
    with runtime:
        handle = runtime.open_stream("s", rate, audio.shape[1], on_estimate=events.append)
        pos = 0
        while pos < len(audio):
            n = int(rng.choice([1, 7, 160, 441, 1000, 4410, 20000, 70000]))
            handle.push(audio[pos : pos + n])
            pos += n
        assert handle.flush()
    return events


def test_random_chunkings_give_identical_windows(classifier) -> None:
    rate = 44100
    audio = synthetic(6.2, rate, 2, seed=5)
    runs = [stream_in_chunks(classifier, audio, rate, seed) for seed in (1, 2, 3)]
    first = runs[0]
    assert len(first) == len(window_ends(round(len(audio) * 16000 / rate), 16000))
    for other in runs[1:]:
        assert [(e.seq, e.t_start_s, e.t_end_s) for e in other] == [
            (e.seq, e.t_start_s, e.t_end_s) for e in first
        ]
        for a, b in zip(first, other, strict=True):
            assert a.label == b.label
            np.testing.assert_allclose(
                [a.raw_probs[k] for k in a.raw_probs], [b.raw_probs[k] for k in a.raw_probs], atol=1e-5
            )
