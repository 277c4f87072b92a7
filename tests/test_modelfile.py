"""The model-file contract: checkpoint round trip, export, backend choice, and every broken file refused clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from emostream.models.arch import build_model
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig
from emostream.models.modelfile import (
    CHECKPOINT_NAME,
    CONFIG_EXTRA,
    SHIPPED_MODELS,
    ModelFileError,
    ModelSpec,
    export_model,
    load_checkpoint,
    load_classifier,
    quiet_jit,
    save_checkpoint,
)

LABELS = ("angry", "happy", "neutral", "sad")
FEATURES = FeatureConfig(window="hamming", n_mels=40, f_max_hz=7600.0, window_s=2.0)
MODEL_CONFIG = ModelConfig("bandsplit_bilstm", 4, 40, {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 24})
SPEC = ModelSpec(FEATURES, MODEL_CONFIG, LABELS, {"name": "tiny", "epochs": 3, "val_uar": 0.5})


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: as fast for these sizes, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(cfg: ModelConfig = MODEL_CONFIG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def logmel(batch: int = 2, n_frames: int = FEATURES.n_frames) -> np.ndarray:
    return np.random.default_rng(0).normal(-4.0, 2.0, (batch, FEATURES.n_mels, n_frames)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """(eager model, checkpoint path, exported model directory)."""
    root = tmp_path_factory.mktemp("modelfile")
    model = make_model()
    ckpt = save_checkpoint(root / "ckpt.pt", model, SPEC)
    return model, ckpt, export_model(ckpt, root / "model")


def assert_refused(path: Path, match: str, **kwargs: str) -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as info:
        load_classifier(path, **kwargs)
    assert str(path) in str(info.value)  # the message names the file
    return info.value


# ----------------------------------------------------------------------------- round trips


def test_checkpoint_round_trip(saved: tuple[torch.nn.Module, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model, ckpt_path, _ = saved
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt = load_checkpoint(ckpt_path)
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert ckpt.spec.feature_config == FEATURES
    assert ckpt.spec.model_config == MODEL_CONFIG
    assert ckpt.spec.labels == LABELS
    assert ckpt.spec.meta == {"name": "tiny", "epochs": 3, "val_uar": 0.5}
    assert ckpt.state_dict.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[key], value), key
    rebuilt = ckpt.build()
    x = torch.from_numpy(logmel())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    raw = real_load(ckpt_path, weights_only=True)  # plain data: readable without our code
    assert raw["format"] == "emostream-checkpoint" and raw["labels"] == list(LABELS)


def test_exported_files_carry_the_config(saved: tuple[torch.nn.Module, Path, Path]) -> None:
    model, _, model_dir = saved
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint.pt", "model.onnx", "model.ts"]
    meta = {p.key: p.value for p in onnx.load(str(model_dir / "model.onnx")).metadata_props}
    extra = {CONFIG_EXTRA: ""}
    with quiet_jit():
        torch.jit.load(str(model_dir / "model.ts"), _extra_files=extra)
    for raw in (meta["emostream"], extra[CONFIG_EXTRA]):
        spec = ModelSpec.from_dict(json.loads(raw))
        assert spec == SPEC
    x = logmel(3)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    for backend in ("onnx", "torchscript", "eager"):
        clf = load_classifier(model_dir, backend=backend)
        assert (clf.backend, clf.labels, clf.feature_config, clf.model_config) == (backend, LABELS, FEATURES, MODEL_CONFIG)
        assert clf.name == "tiny"
        np.testing.assert_allclose(clf.predict(x), expected, atol=1e-5)


def test_backend_auto_prefers_onnx_then_torchscript_then_eager(
    saved: tuple[torch.nn.Module, Path, Path], tmp_path: Path
) -> None:
    _, _, model_dir = saved
    assert load_classifier(model_dir).backend == "onnx"
    partial = shutil.copytree(model_dir, tmp_path / "copy")
    (partial / "model.onnx").unlink()
    assert load_classifier(partial).backend == "torchscript"
    (partial / "model.ts").unlink()
    assert load_classifier(partial).backend == "eager"
    assert load_classifier(model_dir / "model.onnx").backend == "onnx"
    assert load_classifier(model_dir / "model.ts").backend == "torchscript"
    with pytest.raises(ModelFileError, match="needs a model.onnx"):
        load_classifier(partial, backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier(model_dir, backend="tensorrt")


def test_cli_export(saved: tuple[torch.nn.Module, Path, Path], tmp_path: Path) -> None:
    _, ckpt, _ = saved
    out = tmp_path / "exported"
    script = Path(sys.executable).with_name("emostream")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "emostream.models.cli"]
    result = subprocess.run(
        [*cmd, "export", "--checkpoint", str(ckpt), "--out", str(out), "--name", "renamed"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert f"-> {out}" in result.stdout and "angry, happy, neutral, sad" in result.stdout
    clf = load_classifier(out)
    assert clf.backend == "onnx" and clf.labels == LABELS and clf.feature_config == FEATURES
    for backend in ("onnx", "torchscript", "eager"):  # --name is in every file's metadata; nothing else changed
        assert load_classifier(out, backend=backend).name == "renamed"
    assert load_checkpoint(out / CHECKPOINT_NAME).state_dict.keys() == load_checkpoint(ckpt).state_dict.keys()


@pytest.mark.skipif(not all((d / "model.onnx").is_file() for d in SHIPPED_MODELS.values()), reason="no shipped models")
def test_shipped_models_load_by_name() -> None:
    """``default`` is the deep model + two clip_stats, the second with the noise subtraction (features with the
    pitch rows); ``fast`` is that deep model alone (log-mel only). Both carry the same labels and speaker split,
    on every backend."""
    from dataclasses import replace

    loaded = {name: {b: load_classifier(name, backend=b) for b in ("onnx", "torchscript")} for name in SHIPPED_MODELS}
    default, fast = loaded["default"]["onnx"], loaded["fast"]["onnx"]
    assert default.name == "default" and fast.name == "fast"
    assert default.labels == fast.labels and default.spec.meta["split"] == fast.spec.meta["split"]
    assert default.feature_config.pitch and fast.feature_config == replace(default.feature_config, pitch=False)
    members = default.model_config.settings["members"]
    assert [m["arch"] for m in members] == [fast.model_config.arch, "clip_stats", "clip_stats"]
    assert members[0]["settings"] == fast.model_config.settings
    assert [m["settings"].get("denoise", 0) for m in members[1:]] == [0, 1]
    for name, by_backend in loaded.items():
        assert by_backend["torchscript"].labels == by_backend["onnx"].labels, name


def test_cli_export_reports_a_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.models.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.pt'}: no such file" in err


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["checkpoint.pt", "model.ts", "model.onnx"])
@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_damaged_files_are_refused(saved: tuple[torch.nn.Module, Path, Path], tmp_path: Path, name: str,
                                   damage: str) -> None:
    _, _, model_dir = saved
    original = (model_dir / name).read_bytes()
    if damage == "random":
        data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    elif damage == "truncated":
        data = original[: len(original) // 2]
    else:
        data = b""
    path = tmp_path / name
    path.write_bytes(data)
    assert_refused(path, "corrupt or truncated")
    if name == "checkpoint.pt":
        with pytest.raises(ModelFileError, match="corrupt or truncated"):
            load_checkpoint(path)


def test_wrong_state_dict_is_refused(tmp_path: Path) -> None:
    other = make_model(ModelConfig("bandsplit_bilstm", 4, 40, {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 8}))
    path = tmp_path / "mismatched.pt"
    payload = {**SPEC.to_dict(), "format": "emostream-checkpoint", "state_dict": other.state_dict()}
    torch.save(payload, path)
    assert_refused(path, "weights do not match the embedded model config")
    with pytest.raises(ModelFileError, match="weights do not match") as info:
        export_model(path, tmp_path / "out")
    assert str(path) in str(info.value)


def test_torchscript_with_a_wrong_label_count_is_refused(tmp_path: Path) -> None:
    three = ModelSpec(FEATURES, ModelConfig("bandsplit_bilstm", 3, 40, dict(MODEL_CONFIG.settings)), LABELS[:3])
    path = tmp_path / "liar.ts"
    with quiet_jit():
        scripted = torch.jit.script(make_model())  # 4 outputs
        torch.jit.save(scripted, str(path), _extra_files={CONFIG_EXTRA: three.to_json()})
    assert_refused(path, "outputs 4 classes but its config names 3 labels")


def test_onnx_without_metadata_is_refused(saved: tuple[torch.nn.Module, Path, Path], tmp_path: Path) -> None:
    _, _, model_dir = saved
    proto = onnx.load(str(model_dir / "model.onnx"))
    del proto.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(proto, str(path))
    assert_refused(path, "no 'emostream' metadata")


def test_directory_whose_files_disagree_is_refused(saved: tuple[torch.nn.Module, Path, Path], tmp_path: Path) -> None:
    _, _, model_dir = saved
    copy = shutil.copytree(model_dir, tmp_path / "mixed")
    proto = onnx.load(str(copy / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "emostream":
            data = json.loads(prop.value)
            data["labels"] = ["anger", "joy", "calm", "sorrow"]
            prop.value = json.dumps(data)
    onnx.save(proto, str(copy / "model.onnx"))
    with pytest.raises(ModelFileError, match="differs from the other files"):
        load_classifier(copy, backend="onnx")


class Payload:
    """An arbitrary object: unpickling it must never happen."""

    def __init__(self) -> None:
        self.value = 42


class Trap:
    """Unpickling this creates a directory: proof that the loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("kind", ["instance", "code"])
def test_pickled_objects_are_not_unpickled(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pt"
    torch.save(Payload() if kind == "instance" else {"format": "emostream-checkpoint", "x": Trap(marker)}, path)
    assert_refused(path, "not a readable emostream checkpoint")
    assert not marker.exists()


def test_other_torch_files_are_refused(tmp_path: Path) -> None:
    bare = tmp_path / "state_dict.pt"
    torch.save(make_model().state_dict(), bare)  # weights without configs
    assert_refused(bare, "not an emostream-checkpoint")
    assert_refused(tmp_path / "missing.pt", "no such file")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"1234")
    assert_refused(odd, "unknown model file type")
