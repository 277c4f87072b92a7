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
from emostream.models.features import FeatureConfig, mel_edges_hz
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


def member(tmp: Path, seed: int, settings: dict | None = None, log_floor: float | None = None, **meta: object) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig("bandsplit_bilstm", len(LABELS), 32, settings or SMALL)
    model = build_model(cfg).eval()
    info = {"name": f"m{seed}", "seed": seed, "split": SPLIT, "datasets": ["c"], "train_seconds": 10.0 + seed, **meta}
    floor = {} if log_floor is None else {"log_floor": log_floor}
    spec = ModelSpec(FeatureConfig(n_mels=32, window_s=2.0, **floor), cfg, LABELS, info)
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


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Syllable bursts of a harmonic voice with breath noise up to 8 kHz, about -20 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(140.0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0.0, None)
    return (0.05 * voice * envelope + 0.01 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def test_narrowband_windows_are_scored_by_the_narrow_members(tmp_path: Path) -> None:
    """``--wide`` / ``--narrow``: a wideband window gets the mean of the untagged and wide members, the same
    window through a telephone line (300-3400 Hz, 8 kHz, mu-law) that of the untagged and narrow ones, on
    every backend and at any gain; the detector's bins come from the features; a gated ensemble combined
    again keeps its tags and detector."""
    from emostream.models.features import LogMel
    from emostream.train.perturb import telephone

    a, b, c = (member(tmp_path, seed, log_floor=1e-14) for seed in (1, 2, 3))
    out = write_ensemble([a, b, c], tmp_path / "gated", bands={1: "wide", 2: "narrow"})
    settings = load_checkpoint(out / "checkpoint.pt").spec.model_config.settings
    assert [m.get("band") for m in settings["members"]] == [None, "wide", "narrow"]
    gate = settings["narrowband"]
    fc = FeatureConfig(n_mels=32, window_s=2.0, log_floor=1e-14)
    edges = mel_edges_hz(fc)
    assert edges[gate["high_bins"][0]] >= 4100 > edges[gate["high_bins"][0] - 1] and gate["high_bins"][1] == 32
    first, stop = gate["band_bins"]
    assert edges[first] >= 300 > edges[first - 1] and edges[stop + 1] <= 3400 < edges[stop + 2]

    wide = speech_like(2.0, 0)
    audio = np.stack([wide, telephone(wide, 16000).astype(np.float32)])
    parts = [load_classifier(p, backend="eager") for p in (a, b, c)]
    for gain_db in (0.0, -20.0, 20.0):
        x = LogMel(fc)(torch.from_numpy(audio * np.float32(10 ** (gain_db / 20))))
        pa, pb, pc = (m.predict(x) for m in parts)
        expected = np.stack([(pa[0] + pb[0]) / 2, (pa[1] + pc[1]) / 2])
        assert np.abs(pb - pc).max() > 1e-3  # the wide and narrow members differ, so which one counts shows
        for backend, name in (("onnx", "model.onnx"), ("torchscript", "model.ts"), ("eager", "checkpoint.pt")):
            got = load_classifier(out / name, backend=backend).predict(x)
            np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"{backend} at {gain_db:+g} dB")

    again = load_checkpoint(write_ensemble([out, member(tmp_path, 4, log_floor=1e-14)], tmp_path / "again") / "checkpoint.pt")
    # the detector needs the features' absolute log floor far below speech: the default floor is refused
    with pytest.raises(ModelFileError, match="log floor"):
        write_ensemble([member(tmp_path, 5), member(tmp_path, 6)], tmp_path / "floor", bands={0: "wide", 1: "narrow"})
    kept = again.spec.model_config.settings
    assert [m.get("band") for m in kept["members"]] == [None, "wide", "narrow", None]
    assert kept["narrowband"] == gate


def test_cli_refuses_bad_band_tags(tmp_path: Path) -> None:
    a, b = member(tmp_path, 1, log_floor=1e-14), member(tmp_path, 2, log_floor=1e-14)
    cmd = [sys.executable, "-m", "emostream.models.cli", "ensemble", str(a), str(b), "--out", str(tmp_path / "e")]
    for extra, code, message in (
        (["--wide", "0", "--narrow", "0"], 2, "in --wide and --narrow"),
        (["--narrow", "x"], 2, "member indices"),
        (["--narrow", "5"], 1, "members 0-1"),
        (["--wide", "0,1"], 1, "members for wideband and for narrowband"),
        (["--narrowband-threshold", "-50"], 1, "needs members tagged"),
    ):
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode == code and message in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
    proc = subprocess.run([*cmd, "--wide", "0", "--narrow", "1", "--narrowband-threshold", "-50"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(tmp_path / "e" / "checkpoint.pt").spec.model_config.settings["narrowband"]["threshold_db"] == -50
