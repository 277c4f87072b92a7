"""Our Cnn14 computes exactly what panns_inference's Cnn14 computes, with its weights; our features match its."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emostream.models.arch.cnn14 import Cnn14Backbone, load_panns_state_dict
from emostream.models.features import FeatureConfig, LogMel

N_AUDIOSET = 527
SAMPLE_RATE_HZ = 16000
# panns_inference's 16 kHz Cnn14 (Cnn14_16k_mAP=0.438.pth): n_fft 512, hop 160, 64 mels, 50-8000 Hz,
# log-mel in dB (10 log10, floor 1e-10). Our settings that reproduce it (with center=False framing):
PANNS_16K_FEATURES = FeatureConfig(
    sample_rate_hz=16000, n_fft=512, stft_win_samples=512, hop_samples=160, window="hann", n_mels=64,
    f_min_hz=50.0, f_max_hz=8000.0, log_floor=1e-10, log_kind="db",
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: as fast for these sizes, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _refuse_shell(command: str) -> int:
    raise AssertionError(f"panns_inference tried to run {command!r} (it must find its label file offline)")


@pytest.fixture(scope="module")
def panns_models(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``panns_inference.models``, imported offline with HOME (and matplotlib's config) in a temporary directory.

    At import, panns_inference reads ``~/panns_data/class_labels_indices.csv`` and runs ``wget`` when it is
    missing; a synthetic file with the 527 AudioSet rows stands in for it, and shell commands are refused.
    """
    home = tmp_path_factory.mktemp("home")
    labels = home / "panns_data" / "class_labels_indices.csv"
    labels.parent.mkdir()
    rows = ["index,mid,display_name"] + [f'{i},/m/test{i:04d},"Class {i}"' for i in range(N_AUDIOSET)]
    labels.write_text("\n".join(rows) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MPLCONFIGDIR", str(home / "mpl"))
        mp.setenv("MPLBACKEND", "Agg")
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setattr(os, "system", _refuse_shell)
        import panns_inference
        import panns_inference.models as models
    assert len(panns_inference.labels) == N_AUDIOSET
    return models


def randomise_norms(model: nn.Module, calibration: torch.Tensor, seed: int) -> None:
    """Random BN affines, and running statistics measured on real input then perturbed per channel.

    The PANNs init leaves BN at weight 1, bias 0, mean 0, var 1: a test with those could not tell which
    axis ``bn0`` normalises. After this, every channel has its own statistics.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        model(calibration)
        for bn in bns:
            n = bn.num_features
            bn.momentum = 0.1
            bn.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(n, generator=gen))
            bn.running_mean.add_(0.2 * torch.randn(n, generator=gen) * bn.running_var.sqrt())
            bn.running_var.mul_(0.7 + 0.6 * torch.rand(n, generator=gen))
    model.eval()


def waveform(batch: int, n_samples: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / SAMPLE_RATE_HZ
    freqs = 200.0 + 3000.0 * torch.rand(batch, 1, generator=gen)
    tone = 0.3 * torch.sin(2 * torch.pi * freqs * t) * (t > 0.3 * torch.rand(batch, 1, generator=gen))
    return tone + 0.05 * torch.rand(batch, 1, generator=gen) * torch.randn(batch, n_samples, generator=gen)


@pytest.fixture(scope="module")
def reference(panns_models: ModuleType) -> nn.Module:
    """panns_inference's 16 kHz Cnn14 with seeded random weights, its statistics and head scaled to real input."""
    torch.manual_seed(0)
    model = panns_models.Cnn14(
        sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=N_AUDIOSET
    )
    calibration = waveform(2, 8000, seed=1)
    randomise_norms(model, calibration, seed=2)
    with torch.no_grad():  # AudioSet logits of unit spread, so the sigmoid outputs are not all saturated
        spread = (model(calibration)["embedding"] @ model.fc_audioset.weight.T).std()
        model.fc_audioset.weight.div_(spread)
    return model


def uninitialised_backbone() -> Cnn14Backbone:
    """Our full-size backbone without the (slow) random init of its 80 M parameters: weights are loaded next."""
    with torch.device("meta"):
        backbone = Cnn14Backbone(64)
    return backbone.to_empty(device="cpu")


@pytest.fixture(scope="module")
def ours(reference: nn.Module) -> Cnn14Backbone:
    backbone = uninitialised_backbone()
    load_panns_state_dict(backbone, reference.state_dict())
    return backbone.eval()


def test_cnn14_equals_panns(reference: nn.Module) -> None:
    state = reference.state_dict()
    backbone = uninitialised_backbone()
    dropped = load_panns_state_dict(backbone, state)
    assert dropped == sorted(k for k in state if k.split(".")[0] in ("spectrogram_extractor", "logmel_extractor",
                                                                      "fc_audioset"))
    assert {k for k in state if k not in dropped} == set(backbone.state_dict())
    head = nn.Linear(2048, N_AUDIOSET)  # the fc_audioset equivalent
    head.load_state_dict({"weight": state["fc_audioset.weight"], "bias": state["fc_audioset.bias"]})
    backbone.eval()

    wave = waveform(2, 10240, seed=3)
    with torch.no_grad():
        expected = reference(wave)
        panns_logmel = reference.logmel_extractor(reference.spectrogram_extractor(wave))  # (B, 1, T, mel)
        embedding = backbone(panns_logmel[:, 0].transpose(1, 2))  # (B, mel, T)
        clipwise = torch.sigmoid(head(embedding))
    assert embedding.shape == (2, 2048) and clipwise.shape == (2, N_AUDIOSET)
    torch.testing.assert_close(embedding, expected["embedding"], rtol=0, atol=1e-5)
    torch.testing.assert_close(clipwise, expected["clipwise_output"], rtol=0, atol=1e-5)
    # a meaningful comparison: the outputs depend on the input and are not saturated
    assert ((embedding[0] - embedding[1]).abs() > 1e-2).sum() > 100
    assert ((clipwise > 0.05) & (clipwise < 0.95)).float().mean() > 0.5
    assert ((clipwise[0] - clipwise[1]).abs() > 1e-2).sum() > 10


def test_bn0_normalises_mel_bins_as_panns_does(ours: Cnn14Backbone) -> None:
    """Applying bn0's statistics to the wrong mel bins changes the result: the equivalence test can fail."""
    x = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(4)) - 3.0
    mean = ours.bn0.running_mean.clone()
    try:
        with torch.no_grad():
            right = ours(x)
            ours.bn0.running_mean.copy_(mean.flip(0))
            assert not torch.allclose(ours(x), right, atol=1e-3)
    finally:
        ours.bn0.running_mean.copy_(mean)


def test_our_db_log_mel_matches_panns_features(reference: nn.Module) -> None:
    """Our features in dB equal PANNs' (which pads the waveform by reflection, center=True) on the same frames."""
    wave = waveform(2, 16000, seed=5)
    with torch.no_grad():
        panns = reference.logmel_extractor(reference.spectrogram_extractor(wave))[:, 0].transpose(1, 2)
        pad = PANNS_16K_FEATURES.n_fft // 2
        features = LogMel(PANNS_16K_FEATURES)(F.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1))
    assert features.shape == panns.shape
    torch.testing.assert_close(features, panns, rtol=0, atol=2e-3)  # dB; float32 conv-STFT vs torch.stft


def test_panns_state_dict_must_fit(reference: nn.Module) -> None:
    state = {k: v for k, v in reference.state_dict().items() if k != "conv_block3.conv1.weight"}
    with pytest.raises(RuntimeError, match="conv_block3.conv1.weight"):
        load_panns_state_dict(Cnn14Backbone(64, [4, 8, 8, 16, 16, 32]), state)
