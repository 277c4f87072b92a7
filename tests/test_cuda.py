"""GPU paths: features, model backends and the runtime on CUDA equal the CPU (skipped without a CUDA GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.features import FeatureConfig, LogMel
from emostream.models.modelfile import load_classifier

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]


def test_log_mel_on_cuda_equals_cpu() -> None:
    cfg = FeatureConfig()
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((3, cfg.window_samples)).astype(np.float32))
    cpu = LogMel(cfg)(wave)
    gpu = LogMel(cfg).cuda()(wave.cuda()).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3)


@pytest.mark.parametrize("backend", ["torchscript", "eager", "onnx"])
def test_classifier_on_cuda_equals_cpu(tiny_model_dir: Path, backend: str) -> None:
    x = np.random.default_rng(1).standard_normal((4, 64, 497)).astype(np.float32)
    cpu = load_classifier(tiny_model_dir, backend=backend, device="cpu").predict(x)
    gpu = load_classifier(tiny_model_dir, backend=backend, device="cuda").predict(x)
    assert np.abs(cpu - gpu).max() < 1e-3
