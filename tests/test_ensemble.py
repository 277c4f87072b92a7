"""`models.ensemble`: the mean of the members' probabilities on every backend, and members that must agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.arch import build_model
from emostream.models.arch.config import ModelConfig
from emostream.models.ensemble import combine, write_ensemble
from emostream.models.features import FeatureConfig
from emostream.models.modelfile import (
    ModelFileError,
    ModelSpec,
    load_checkpoint,
    load_classifier,
    save_checkpoint,
)

LABELS = ("angry", "happy", "neutral", "sad")
SMALL = {"channels": [8, 16], "band_dim": 16, "lstm_hidden": 16, "input_norm": "cmn", "pooling": "masked_stats"}
SPLIT = {"seed": 0, "test": ["c:3"], "val": ["c:2"], "train": ["c:0", "c:1"]}


def member(tmp: Path, seed: int, settings: dict | None = None, **meta: object) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig("bandsplit_bilstm", len(LABELS), 32, settings or SMALL)
    model = build_model(cfg).eval()
    info = {"name": f"m{seed}", "seed": seed, "split": SPLIT, "datasets": ["c"], "train_seconds": 10.0 + seed, **meta}
    spec = ModelSpec(FeatureConfig(n_mels=32, window_s=2.0), cfg, LABELS, info)
    return save_checkpoint(tmp / f"m{seed}.pt", model, spec)


def inputs(n_frames: int) -> np.ndarray:
    gen = np.random.default_rng(0)
    x = gen.normal(-6.0, 2.0, (3, 32, n_frames)).astype(np.float32)
    x[1, :, : n_frames // 2] = -32.0  # a start-up window, half padding
    return x


def test_exported_ensemble_is_the_mean_of_its_members_on_every_backend(tmp_path: Path) -> None:
    a = member(tmp_path, 1)
    b = member(tmp_path, 2, {**SMALL, "time_pool": [4, 2]})
    out = write_ensemble([a, b], tmp_path / "ens")
    frames = FeatureConfig(n_mels=32, window_s=2.0).n_frames
    x = inputs(frames)
    members = [load_classifier(p, backend="eager").predict(x) for p in (a, b)]
    expected = (members[0] + members[1]) / 2
    assert np.abs(members[0] - members[1]).max() > 1e-3  # the members differ, so the mean is a real test
    for backend, name in (("onnx", "model.onnx"), ("torchscript", "model.ts"), ("eager", "checkpoint.pt")):
        clf = load_classifier(out / name, backend=backend)
        assert clf.labels == LABELS and clf.model_config.arch == "ensemble"
        np.testing.assert_allclose(clf.predict(x), expected, atol=2e-5, err_msg=backend)
    meta = load_checkpoint(out / "checkpoint.pt").spec.meta
    assert [m["seed"] for m in meta["members"]] == [1, 2]
    assert meta["train_seconds"] == 23.0 and meta["split"] == SPLIT and meta["name"] == "ens"


def test_an_ensemble_of_an_ensemble_lists_the_members_once(tmp_path: Path) -> None:
    a, b, c = member(tmp_path, 1), member(tmp_path, 2), member(tmp_path, 3)
    ab = write_ensemble([a, b], tmp_path / "ab")
    abc = load_checkpoint(write_ensemble([ab, c], tmp_path / "abc") / "checkpoint.pt")
    assert len(abc.spec.model_config.settings["members"]) == 3
    x = torch.from_numpy(inputs(FeatureConfig(n_mels=32, window_s=2.0).n_frames))
    with torch.no_grad():
        got = torch.softmax(abc.build()(x), -1)
        parts = [torch.softmax(load_checkpoint(p).build()(x), -1) for p in (a, b, c)]
    # (mean(a, b) + c) / 2 weights c twice: flattening makes it a plain mean of the three members
    torch.testing.assert_close(got, sum(parts) / 3, atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {**SPLIT, "test": ["c:1"], "train": ["c:0", "c:3"]}}, "'split' differs"),
        ({"datasets": ["c", "d"]}, "'datasets' differs"),
        ({"label_map": {"calm": "neutral"}}, "'label_map' differs"),
    ],
)
def test_members_that_saw_different_speakers_or_data_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    a = member(tmp_path, 1)
    b = member(tmp_path, 2, **change)
    with pytest.raises(ModelFileError, match=message):
        write_ensemble([a, b], tmp_path / "ens")
    assert not (tmp_path / "ens" / "model.onnx").exists()


def test_members_with_other_labels_or_features_are_refused(tmp_path: Path) -> None:
    a = load_checkpoint(member(tmp_path, 1))
    cfg = ModelConfig("bandsplit_bilstm", len(LABELS), 32, SMALL)
    torch.manual_seed(0)
    model = build_model(cfg)
    other_labels = ModelSpec(a.spec.feature_config, cfg, ("angry", "calm", "neutral", "sad"), a.spec.meta)
    other_features = ModelSpec(FeatureConfig(n_mels=32, window_s=3.0), cfg, LABELS, a.spec.meta)
    for spec, message in ((other_labels, "labels"), (other_features, "feature settings")):
        b = load_checkpoint(save_checkpoint(tmp_path / "b.pt", model, spec))
        with pytest.raises(ValueError, match=message):
            combine([a, b])
    with pytest.raises(ValueError, match="at least two"):
        combine([a])


def test_cli_reports_bad_members_in_one_line(tmp_path: Path) -> None:
    a = member(tmp_path, 1)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cmd = [sys.executable, "-m", "emostream.models.cli", "ensemble"]
    proc = subprocess.run([*cmd, str(a), str(corrupt), "--out", str(tmp_path / "e")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd, str(a), "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "at least two" in proc.stderr


def test_members_picked_from_an_ensemble_keep_their_weights(tmp_path: Path) -> None:
    """``PATH@I,J`` takes those members of an ensemble: picking all of them again rebuilds it exactly, one
    member alone is that member as its own model (the same outputs as the model it came from), and a pick
    from a plain model or out of range is a clear error; on the command line too."""
    a, b, c = member(tmp_path, 1), member(tmp_path, 2), member(tmp_path, 3)
    abc = write_ensemble([a, b, c], tmp_path / "abc")
    again = load_checkpoint(write_ensemble([f"{abc}@0,2", f"{abc}@1"], tmp_path / "acb") / "checkpoint.pt")
    assert len(again.spec.model_config.settings["members"]) == 3
    assert [m["seed"] for m in again.spec.meta["members"]] == [1, 3, 2]  # each member's own facts go along
    x = torch.from_numpy(inputs(FeatureConfig(n_mels=32, window_s=2.0).n_frames))
    with torch.no_grad():
        torch.testing.assert_close(
            torch.softmax(again.build()(x), -1), torch.softmax(load_checkpoint(abc / "checkpoint.pt").build()(x), -1)
        )
        alone = load_checkpoint(write_ensemble([f"{abc}@1"], tmp_path / "b_alone") / "checkpoint.pt")
        assert alone.spec.model_config.arch == "bandsplit_bilstm"
        assert alone.spec.meta["name"] == "b_alone" and [m["seed"] for m in alone.spec.meta["members"]] == [2]
        torch.testing.assert_close(alone.build()(x), load_checkpoint(b).build()(x), atol=0, rtol=0)
    with pytest.raises(ModelFileError, match="only be picked from an ensemble"):
        write_ensemble([f"{a}@0", b], tmp_path / "bad")
    with pytest.raises(ModelFileError, match="members 0-2, each picked at most once"):
        write_ensemble([f"{abc}@3", b], tmp_path / "bad")
    cmd = [sys.executable, "-m", "emostream.models.cli", "ensemble"]
    proc = subprocess.run([*cmd, f"{abc}@0,0", "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "at most once" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd, f"{abc}@2", "--out", str(tmp_path / "c_alone")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 model," in proc.stdout, proc.stdout + proc.stderr
