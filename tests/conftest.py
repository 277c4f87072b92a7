"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_LABELS = ("neutral", "happy", "sad", "angry")
TINY_SETTINGS = {
    "channels": [4, 8],
    "band_dim": 16,
    "lstm_hidden": 16,
    "dropout": 0.0,
    "input_norm": "cmn",
    "pooling": "masked_stats",
}
"""The shipped model's kind (level-invariant normalisation, pooling over active frames), small."""
TINY_FEATURES = {"log_floor": 1e-14}


def build_tiny_model(
    out_dir: Path, window_s: float = 5.0, seed: int = 0, settings: dict | None = None, features: dict | None = None
) -> Path:
    """Export an untrained, small bandsplit_bilstm (seeded) into ``out_dir``: model.ts, model.onnx, checkpoint.pt.

    ``features``: feature settings over ``TINY_FEATURES`` (``{"pitch": True}`` also switches the model's pitch on).
    """
    import torch

    from emostream.models.arch import build_model
    from emostream.models.arch.config import ModelConfig
    from emostream.models.features import FeatureConfig
    from emostream.models.modelfile import ModelSpec, export_model, save_checkpoint

    torch.manual_seed(seed)
    features_config = FeatureConfig(window_s=window_s, **{**TINY_FEATURES, **(features or {})})
    pitch = {"pitch": True} if features_config.pitch else {}
    spec = ModelSpec(
        features_config,
        ModelConfig(
            "bandsplit_bilstm", len(TINY_LABELS), features_config.n_mels, {**TINY_SETTINGS, **pitch, **(settings or {})}
        ),
        TINY_LABELS,
        meta={"name": "tiny-test"},
    )
    model = build_model(spec.model_config).eval()
    with torch.no_grad():  # larger head weights: probabilities that differ between windows
        for p in model.head.parameters():
            p.mul_(5.0)
    model_dir = out_dir / "model"
    save_checkpoint(model_dir / "checkpoint.pt", model, spec)
    export_model(model_dir / "checkpoint.pt", model_dir)  # adds model.ts and model.onnx
    return model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 4-class model directory (5 s windows, the shipped feature settings), built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture
def one_torch_thread():
    """Run torch on one intra-op thread for the test (restored after).

    On the 2 shared CI cores, torch's 2-thread OpenMP pool in the main thread can spin for seconds per
    call when other processes hold the cores; one thread keeps the streaming tests short and steady.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
