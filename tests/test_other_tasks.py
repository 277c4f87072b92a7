"""A model of another task end to end: `emostream train --arch resnet --data UrbanSound8K/`, export, stream, serve.

The synthetic UrbanSound8K tree (tests/sounds.py) has three sound classes in the official ten folds.
A tiny ResNet trains on it through the CLI as a user runs it; the model file carries the classes read
from the data and says it is not about speech, so the streamer classifies every window (silence too)
even with its speech detector on; `emostream serve` announces those labels; the dashboard shows them.
A tiny DenseNet goes through the same streaming replay.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import offline_window_probs
from rich.console import Console
from sounds import SR, US8K_CLASSES, synth_sound, write_us8k
from wsutil import ServeProcess, check_estimate, stream_audio

from emostream.models.arch import build_model
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig
from emostream.models.modelfile import ModelSpec, export_model, load_classifier, save_checkpoint
from emostream.streamer.core.vad import VadConfig
from emostream.streamer.runtime.config import RuntimeConfig
from emostream.streamer.runtime.runtime import Runtime
from emostream.streamer.sinks.dashboard import Dashboard, render
from emostream.train.cli import register_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FEATURES = {"window_s": 2.0, "n_mels": 32, "f_max_hz": 7000.0}
TINY_RESNET = {"variant": "resnet18", "layers": [1, 1, 1, 1], "base_channels": 8}
TINY_DENSENET = {"block_config": [1, 2, 1, 1], "growth_rate": 4, "num_init_features": 8}
HOP_S = 0.5
LABELS = tuple(sorted(US8K_CLASSES))  # the label set read from the data


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`emostream train --data <tmp>/UrbanSound8K --arch resnet ...` (no --datasets, no --labels): the run dir."""
    root = tmp_path_factory.mktemp("us8k_run")
    data = write_us8k(root / "UrbanSound8K")
    parser = argparse.ArgumentParser(prog="emostream")
    register_train(parser.add_subparsers())
    args = parser.parse_args([
        "train", "--data", str(data), "--arch", "resnet", "--model-settings", json.dumps(TINY_RESNET),
        "--feature-settings", json.dumps(FEATURES), "--epochs", "8", "--batch-size", "8", "--lr", "3e-3",
        "--threads", "1", "--no-augment", "--p-join", "0", "--ema-decay", "0", "--out", str(root / "run"),
        "--cache", str(root / "cache"),
    ])
    with pytest.warns(UserWarning, match="UNTRAINED"):  # no ImageNet weights named: said so
        assert args.func(args) == 0
    return root / "run"


def test_trained_on_the_official_folds_with_the_datas_labels(trained: Path) -> None:
    report = json.loads((trained / "report.json").read_text())
    assert report["model"]["labels"] == list(LABELS)
    assert report["train"]["split"]["test"] == ["urbansound8k:fold10"]
    assert report["train"]["split"]["val"] == ["urbansound8k:fold9"]
    assert report["datasets"]["urbansound8k"]["n"] == 3 * 2
    assert report["train"]["best_val_ua"] > 0.5 and report["overall"]["ua"] > 0.5  # chance: 1/3
    clf = load_classifier(trained / "model")
    assert clf.labels == LABELS and clf.model_config.arch == "resnet"
    assert clf.spec.meta["speech"] is False and clf.spec.speech_gated is False
    assert "UrbanSound8K" in clf.spec.meta["licence"]


def stream(classifier, audio: np.ndarray) -> list:
    """The audio through the runtime with the speech detector ON (energy gate), in uneven chunks."""
    events: list = []
    runtime = Runtime(classifier, RuntimeConfig(hop_s=HOP_S, vad=VadConfig(enabled=True, method="energy")))
    with runtime:
        handle = runtime.open_stream("s", SR, 1, on_estimate=events.append)
        for start in range(0, len(audio), 3001):
            handle.push(audio[start : start + 3001])
        assert handle.flush()
    return events


def recording() -> np.ndarray:
    """A siren, 1.5 s of digital silence (a speech gate would skip it), an engine."""
    return np.concatenate([synth_sound("siren", 1), np.zeros(int(1.5 * SR), np.float32), synth_sound("engine_idling", 2)])


def tiny_densenet_dir(root: Path) -> Path:
    torch.manual_seed(0)
    fc = FeatureConfig(**FEATURES)
    cfg = ModelConfig("densenet", len(LABELS), fc.n_mels, TINY_DENSENET)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        model = build_model(cfg).eval()
    spec = ModelSpec(fc, cfg, LABELS, {"name": "tiny-densenet", "speech": False})
    return export_model(save_checkpoint(root / "ckpt.pt", model, spec), root / "model")


@pytest.mark.parametrize("which", ["resnet", "densenet"])
@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_every_window_is_classified_and_streaming_equals_offline(
    trained: Path, tmp_path: Path, which: str, backend: str
) -> None:
    model_dir = trained / "model" if which == "resnet" else tiny_densenet_dir(tmp_path)
    clf = load_classifier(model_dir, backend=backend)
    audio = recording()
    events = stream(clf, audio)
    ref = offline_window_probs(audio, clf, round(HOP_S * SR))
    assert len(events) == len(ref) >= 8
    assert all(e.speech and e.label in LABELS for e in events)  # silence too: not a speech model
    got = np.array([[e.raw_probs[k] for k in LABELS] for e in events])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_a_speech_model_would_gate_the_silence(trained: Path) -> None:
    """The same weights marked as a speech model: the silent windows are not classified (the flag is used)."""
    clf = load_classifier(trained / "model", backend="onnx")
    clf.spec = ModelSpec(clf.spec.feature_config, clf.spec.model_config, clf.spec.labels,
                         {**clf.spec.meta, "speech": True})
    events = stream(clf, recording())
    assert any(not e.speech and e.label is None for e in events)


def test_serve_announces_the_models_labels(trained: Path) -> None:
    with ServeProcess(["--model", str(trained / "model"), "--vad", "energy", "--hop-s", str(HOP_S),
                       "--limit-realtime-factor", "1000", "--limit-burst-s", "1000"]) as srv:
        audio = recording()[:, None]
        result = asyncio.run(stream_audio(srv.url, audio, SR, "f32le", speed=50.0))
    assert result.error is None and result.ready is not None
    assert result.ready["labels"] == list(LABELS) and result.ready["speech_gated"] is False
    assert len(result.estimates) >= 8
    for msg in result.estimates:
        check_estimate(msg, LABELS)
        assert msg["speech"] is True and msg["label"] in LABELS


def test_dashboard_shows_any_label_set(trained: Path) -> None:
    clf = load_classifier(trained / "model", backend="onnx")
    labels = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
              "gun_shot", "jackhammer", "siren", "street_music")
    dash = Dashboard(labels, "us8k", "mic", SR, 2.0, HOP_S, console=Console(file=io.StringIO()))
    for e in stream(clf, recording())[:3]:
        probs = {k: 0.02 for k in labels} | {"siren": 0.82}
        dash.publish(type(e)(e.stream, e.seq, e.t_start_s, e.t_end_s, "siren", 0.82, probs, probs, True, 1.0,
                             e.latency_ms, e.model, 0))
    console = Console(width=110, record=True, file=io.StringIO(), color_system=None)
    console.print(render(dash.snapshot()))
    text = console.export_text()
    assert "SIREN" in text and "82" in text
    for label in labels:
        assert label in text, label
