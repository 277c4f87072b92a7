"""Classes trained apart and merged at inference (``ModelConfig.fold``, ``--fold-merged``), and mixup.

The fold must give, on every backend, exactly the summed probabilities of the head's classes, so a
model trained with calm as a class of its own reports calm as neutral everywhere it is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.arch import ModelConfig, build_model
from emostream.models.arch.layers import FoldClasses
from emostream.models.features import FeatureConfig, LogMel
from emostream.models.modelfile import (
    ModelSpec,
    export_model,
    load_checkpoint,
    load_classifier,
    save_checkpoint,
)
from emostream.train.labels import PRESETS, LabelSet, fold_plan
from emostream.train.loop import train
from tests.test_train_pipeline import config, write_corpus

SETTINGS = {
    "channels": [8, 16],
    "band_dim": 32,
    "lstm_hidden": 16,
    "input_norm": "cmn",
    "pooling": "masked_stats",
}


def test_fold_plan_trains_each_merged_label_that_occurs_apart() -> None:
    head, groups = fold_plan(PRESETS["7class"], ["neutral", "calm", "sad", "happy"])
    assert head == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised", "calm")
    assert groups == ((0, 7), (1,), (2,), (3,), (4,), (5,), (6,))
    # nothing to merge in the data (no calm clips): the head is the label set itself
    assert fold_plan(PRESETS["7class"], ["neutral", "sad"]) == (PRESETS["7class"].labels, ())
    two_into_one = LabelSet(("neutral", "happy"), {"calm": "neutral", "sad": "neutral"})
    assert fold_plan(two_into_one, ["sad", "calm"])[1] == ((0, 2, 3), (1,))


def test_model_config_fold_round_trips_and_rejects_bad_groups() -> None:
    cfg = ModelConfig("bandsplit_bilstm", 3, 32, SETTINGS, fold=((0, 3), (1,), (2,)))
    assert cfg.n_head_classes == 4
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert "fold" not in ModelConfig("bandsplit_bilstm", 3, 32).to_dict()  # old files stay as they were
    with pytest.raises(ValueError, match="one non-empty group per class"):
        ModelConfig("bandsplit_bilstm", 3, 32, fold=((0, 1), (2,)))
    with pytest.raises(ValueError, match="exactly once"):
        ModelConfig("bandsplit_bilstm", 2, 32, fold=((0, 2), (3,)))


def test_folded_model_sums_head_probabilities_on_every_backend(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig("bandsplit_bilstm", 3, 32, SETTINGS, fold=((0, 3), (1,), (2,)))
    model = build_model(cfg).eval()
    assert isinstance(model, FoldClasses)
    with torch.no_grad():  # a head that prefers the folded-in class, so the sum matters
        model.inner.head.bias[3] += 2.0
    fc = FeatureConfig(window_s=2.0, n_mels=32, f_max_hz=7000.0, log_floor=1e-14)
    rng = np.random.default_rng(1)
    waves = torch.from_numpy((0.1 * rng.standard_normal((3, fc.window_samples))).astype(np.float32))
    x = LogMel(fc)(waves)
    with torch.no_grad():
        head = torch.softmax(model.inner(x), -1).numpy()
    expected = np.stack([head[:, 0] + head[:, 3], head[:, 1], head[:, 2]], axis=1)
    path = save_checkpoint(tmp_path / "best.pt", model, ModelSpec(fc, cfg, ("neutral", "happy", "sad"), {}))
    assert load_checkpoint(path).spec.model_config.fold == cfg.fold
    model_dir = export_model(path, tmp_path / "model")
    for backend in ("eager", "torchscript", "onnx"):
        probs = load_classifier(model_dir, backend=backend).predict(x.numpy())
        assert probs.shape == (3, 3)
        np.testing.assert_allclose(probs, expected, atol=1e-5, err_msg=backend)


def test_training_with_a_merged_label_apart_and_mixup(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "data", takes=3)
    out = tmp_path / "run"
    # sad is merged into neutral: trained as its own head class, folded at inference
    cfg = config(
        data,
        out,
        tmp_path / "cache",
        labels="neutral,happy",
        label_map="sad=neutral",
        fold_merged=True,
        mixup=0.4,
        mixup_prob=0.5,
        epochs=2,
    )
    report = train(cfg)
    best = load_checkpoint(out / "best.pt")
    assert best.spec.labels == ("neutral", "happy")
    assert best.spec.model_config.fold == ((0, 2), (1,))
    assert best.spec.meta["head_labels"] == ["neutral", "happy", "sad"]
    history = report["train"]["history"]
    mixed = sum(epoch["mixed_batches"] for epoch in history)
    batches = sum(-(-report["train"]["n_clips"]["train"] // cfg.batch_size) for _ in history)
    assert 0 < mixed < batches
    classifier = load_classifier(out / "model", backend="onnx")
    assert classifier.labels == ("neutral", "happy")
