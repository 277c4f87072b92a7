"""Every architecture: shapes, TorchScript and ONNX Runtime equal eager (through models.modelfile), sizes, FLOPs."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from emostream.models.arch import ARCHITECTURES, build_model, count_parameters
from emostream.models.arch.acnt import ACNT, ResidualBlock, SinusoidalPositions
from emostream.models.arch.cnn14 import Cnn14Backbone
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig
from emostream.models.flops import count_flops, describe, rnn_flops
from emostream.models.modelfile import ModelSpec, export_model, load_classifier, save_checkpoint

LABELS = ("angry", "happy", "neutral", "sad")
TINY_CNN14 = [4, 8, 8, 16, 16, 32]  # Cnn14-shaped (6 blocks, 5 poolings), a few thousand parameters
# Small-but-real configs for the export round trips; the published sizes are checked by count below.
CONFIGS = {
    "bandsplit_bilstm": ModelConfig("bandsplit_bilstm", 4, 64, {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 32}),
    "panns_bandsplit": ModelConfig(
        "panns_bandsplit", 4, 64,
        {"backbone_channels": TINY_CNN14, "band_channels": [4, 8], "band_dim": 16, "head_hidden": 32},
    ),
    "cnn_bilstm_attn": ModelConfig("cnn_bilstm_attn", 4, 64, {"channels": [8, 16], "lstm_hidden": 32}),
    "acnt": ModelConfig("acnt", 4, 64, {"channels": [8, 16, 32, 64], "d_model": 64, "ff_dim": 128}),
    "cnn14": ModelConfig("cnn14", 4, 64, {"channels": TINY_CNN14}),
    # ResNet50-shaped (bottlenecks, 1-channel stem) and DenseNet-shaped, a few thousand parameters
    "resnet": ModelConfig("resnet", 4, 64, {"variant": "resnet50", "layers": [1, 1, 1, 1], "base_channels": 4,
                                            "in_channels": 1, "dropout": 0.2}),
    "densenet": ModelConfig("densenet", 4, 64, {"block_config": [1, 2, 1, 1], "growth_rate": 4,
                                                "num_init_features": 8}),
    # the statistics baseline's streaming form (mel rows only here; with pitch rows in tests/test_clip_stats.py)
    "clip_stats": ModelConfig("clip_stats", 4, 64, {"pitch": False}),
    # two differently shaped members: the mean of their probabilities, as one model file
    "ensemble": ModelConfig("ensemble", 4, 64, {"members": [
        {"arch": "bandsplit_bilstm", "settings": {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 32}},
        {"arch": "bandsplit_bilstm", "settings": {"channels": [8, 16], "band_dim": 16, "lstm_hidden": 16,
                                                  "input_norm": "cmn", "pooling": "masked_stats",
                                                  "time_pool": [4, 2]}},
    ]}),
}
BATCHES = (1, 3, 8)
LENGTHS = (200, 497)
BACKEND_TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Small models: one intra-op thread is as fast, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """The model with seeded random weights, random norm affines, and BatchNorm statistics measured on
    log-mel-like input (every channel different, activations healthy, so outputs depend on the input)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        model = build_model(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.7 + 0.6 * torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    model.eval()
    batch_norms = [m for m in norms if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in batch_norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, the batch's statistics
        m.train()
    with torch.no_grad():
        model(logmel(6, cfg.n_mels, 128, seed=seed + 2))
    for m in batch_norms:
        m.momentum = 0.1
    return model.eval()


def logmel(batch: int, n_mels: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    """Log-mel-like input: each example its own loudness, spectral tilt and loud stretch, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    level = -8.0 + 6.0 * torch.rand(batch, 1, 1, generator=gen)
    tilt = 4.0 * torch.randn(batch, 1, 1, generator=gen) * torch.linspace(-1.0, 1.0, n_mels).view(1, -1, 1)
    start = torch.randint(0, max(1, n_frames // 2), (batch, 1, 1), generator=gen)
    frames = torch.arange(n_frames).view(1, 1, -1)
    burst = 4.0 * ((frames >= start) & (frames < start + n_frames // 3)).float()
    return level + tilt + burst + 2.0 * torch.randn(batch, n_mels, n_frames, generator=gen)


def test_registry_names_every_architecture() -> None:
    assert set(CONFIGS) == set(ARCHITECTURES)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(ModelConfig("vgg16", 4, 64, {}))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shapes(arch: str) -> None:
    cfg = CONFIGS[arch]
    model = build(cfg)
    with torch.no_grad():
        for batch, frames in ((1, 64), (2, 160), (3, 497)):
            out = model(logmel(batch, cfg.n_mels, frames))
            assert out.shape == (batch, cfg.n_classes)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_equals_one_by_one(arch: str) -> None:
    cfg = CONFIGS[arch]
    model = build(cfg)
    x = logmel(3, cfg.n_mels, 128, seed=3)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert (batched.std(dim=0) > 1e-3).any()  # different inputs give different outputs


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_trainable_parameter_gets_a_gradient(arch: str) -> None:
    """What is built is used: each trainable parameter influences the loss (the ACNT lesson)."""
    cfg = CONFIGS[arch]
    model = build(cfg).train()
    model(logmel(2, cfg.n_mels, 128)).square().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert unused == []


class Exported:
    """One architecture saved as a checkpoint, exported through models.modelfile, with eager outputs."""

    def __init__(self, root: Path, arch: str) -> None:
        cfg = CONFIGS[arch]
        model = build(cfg, seed=7)
        spec = ModelSpec(FeatureConfig(n_mels=cfg.n_mels), cfg, LABELS, {"name": f"test-{arch}"})
        self.model_dir = export_model(save_checkpoint(root / "ckpt.pt", model, spec), root / "model")
        self.inputs: dict[tuple[int, int], torch.Tensor] = {}
        self.expected: dict[tuple[int, int], np.ndarray] = {}
        with torch.no_grad():
            for frames in LENGTHS:
                for batch in BATCHES:
                    x = logmel(batch, cfg.n_mels, frames, seed=batch * 1000 + frames)
                    self.inputs[batch, frames] = x
                    self.expected[batch, frames] = model(x).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    return {arch: Exported(tmp_path_factory.mktemp(arch), arch) for arch in ARCHITECTURES}


MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "eager": "checkpoint.pt"}


@pytest.mark.parametrize("backend", ["onnx", "torchscript", "eager"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_backend_equals_eager(exported: dict[str, Exported], arch: str, backend: str) -> None:
    ex = exported[arch]
    clf = load_classifier(ex.model_dir / MODEL_FILES[backend], backend=backend)
    assert clf.backend == backend and clf.labels == LABELS and clf.model_config == CONFIGS[arch]
    for (batch, frames), x in ex.inputs.items():
        expected = ex.expected[batch, frames]
        got = clf.logits(x.numpy())
        assert got.shape == (batch, len(LABELS))
        np.testing.assert_allclose(got, expected, rtol=0, atol=BACKEND_TOL, err_msg=f"{backend} B={batch} T={frames}")
        if batch > 1:
            assert np.ptp(expected, axis=0).max() > 1e-3  # not a constant function of the input
    np.testing.assert_allclose(clf.predict(x).sum(axis=1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- sizes and FLOPs


def meta_count(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(cfg, load_weights=False))


def test_parameter_counts() -> None:
    assert count_parameters(build_model(ModelConfig("bandsplit_bilstm", 7, 64, {}))) < 5_000_000
    # the published CNN-BiLSTM-attention system it follows: ~2.25 M parameters at 128 mels (BiLSTM on 64 x 32
    # features dominates)
    assert count_parameters(build_model(ModelConfig("cnn_bilstm_attn", 8, 128, {}))) == pytest.approx(2.25e6, rel=0.01)
    assert 1.0e6 < count_parameters(build_model(ModelConfig("acnt", 8, 40, {}))) < 2.0e6  # the published ACNT CNN-Transformer: ~1.37 M
    # the published Cnn14 with its 527-class AudioSet head has 80.75 M parameters
    assert meta_count(ModelConfig("cnn14", 527, 64, {})) == pytest.approx(80.75e6, rel=0.002)
    assert meta_count(ModelConfig("panns_bandsplit", 4, 64, {})) == pytest.approx(80.2e6, rel=0.01)


def test_count_flops_adds_the_lstm_the_counter_misses() -> None:
    model = build_model(ModelConfig("bandsplit_bilstm", 4, 64, {})).train()  # the default model
    x = logmel(2, 64, 128)
    before = model.eval()(x).detach()
    model.train()
    flops = count_flops(model, 64, 497)
    assert model.training and "forward" not in vars(model.lstm)  # mode and the real LSTM restored
    torch.testing.assert_close(model.eval()(x).detach(), before, rtol=0, atol=0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 64, 497))
    lstm = 2 * 2 * 4 * 64 * (64 + 64) * (497 // 4)  # 2 FLOPs x 2 dirs x 4 gates x H x (I + H) x T'
    print(f"bandsplit_bilstm: {flops:,} FLOPs per 5-s window ({flops / 1e9:.3f} GFLOP), LSTM {lstm:,}")
    assert flops == counter.get_total_flops() + lstm
    assert flops > 0 and lstm > 0.1 * flops


def test_rnn_flops_formula() -> None:
    lstm = nn.LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)
    per_step = 4 * 20 * (10 + 20) + 4 * 20 * (40 + 20)
    assert rnn_flops(lstm, (3, 7, 10)) == 2 * 2 * per_step * 3 * 7
    gru = nn.GRU(10, 20)  # (T, B, I)
    assert rnn_flops(gru, (7, 3, 10)) == 2 * 3 * 20 * 30 * 21


def test_count_flops_of_recurrent_variants() -> None:
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16, num_layers=2, proj_size=4)
            self.gru = nn.GRU(8, 8, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, (h, c) = self.lstm(x[0].T)  # unbatched (T, I), projected hidden state
            z, hn = self.gru(x.transpose(1, 2))
            return y.sum() + h.sum() + c.sum() + z.sum() + hn.sum()

    lstm_per_step = (4 * 16 * (8 + 4) + 4 * 16) + (4 * 16 * (4 + 4) + 4 * 16)  # gates + projection, 2 layers
    gru_per_step = 3 * 8 * (8 + 8)
    assert count_flops(Recurrent(), 8, 10) == 2 * 10 * (lstm_per_step + gru_per_step)


def test_count_flops_of_a_linear_model() -> None:
    class PerFrame(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.transpose(1, 2)).mean(dim=1)

    assert count_flops(PerFrame(), 64, 100) == 2 * 64 * 5 * 100


def test_describe() -> None:
    info = describe(ModelConfig("acnt", 4, 64, {}), FeatureConfig())
    assert info["params"] == count_parameters(build_model(ModelConfig("acnt", 4, 64, {})))
    assert info["n_frames"] == 497 and info["gflop_per_window"] == info["flops_per_window"] / 1e9
    assert 0.5 < info["gflop_per_window"] < 2.0
    with pytest.raises(ValueError, match="mel bins"):
        describe(ModelConfig("acnt", 4, 40, {}), FeatureConfig())


# ----------------------------------------------------------------------------- acnt


def test_acnt_residual_is_added() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 20)
    for in_ch, out_ch in ((8, 16), (8, 8)):  # projection and identity shortcuts
        block = ResidualBlock(in_ch, out_ch, dropout=0.0).eval()
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
            full = block(x)
            main, skip = block.main(x), block.shortcut(x)
            torch.testing.assert_close(full, block.pool(torch.relu(main + skip)))
            assert not torch.allclose(full, block.pool(torch.relu(main)))  # the skip path contributes
            last_bn = block.main[-1]
            last_bn.weight.zero_()
            last_bn.bias.zero_()  # the conv branch now outputs exactly zero
            skip_only = block(x)
        expected = block.pool(torch.relu(x if in_ch == out_ch else block.shortcut(x)))
        torch.testing.assert_close(skip_only, expected)
        assert skip_only.abs().sum() > 0


def test_sinusoidal_positions_any_length() -> None:
    pe = SinusoidalPositions(16)
    x = torch.zeros(1, 6000, 16)
    out = pe(x)[0]
    for t in (0, 1, 17, 5999):
        for i in range(8):
            angle = t / 10000 ** (2 * i / 16)
            assert out[t, 2 * i].item() == pytest.approx(np.sin(angle), abs=2e-3)
            assert out[t, 2 * i + 1].item() == pytest.approx(np.cos(angle), abs=2e-3)


def test_acnt_uses_positions() -> None:
    model = build(ModelConfig("acnt", 4, 64, {"ff_dim": 256}))
    x = logmel(2, 64, 128)
    with torch.no_grad():
        with_positions = model(x)
        model.positions = nn.Identity()
        without = model(x)
    assert not torch.allclose(with_positions, without, atol=1e-4)


def test_acnt_scripts_and_rejects_bad_heads() -> None:
    model = ACNT(ModelConfig("acnt", 4, 64, {"ff_dim": 64, "d_model": 32}))
    assert model(logmel(1, 64, 100)).shape == (1, 4)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        ACNT(ModelConfig("acnt", 4, 64, {"d_model": 30, "n_heads": 4}))


# ----------------------------------------------------------------------------- cnn14 / panns_bandsplit


def test_cnn14_backbone_shapes_and_limits() -> None:
    backbone = Cnn14Backbone(64, TINY_CNN14).eval()
    with torch.no_grad():
        assert backbone(logmel(2, 64, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="n_mels >= 32"):
        Cnn14Backbone(16, TINY_CNN14)
    with pytest.raises(ValueError, match="6 positive"):
        Cnn14Backbone(64, [4, 8, 16])


def test_panns_bandsplit_freezes_the_first_blocks() -> None:
    cfg = CONFIGS["panns_bandsplit"]
    model = build(ModelConfig(cfg.arch, 4, 64, {**cfg.settings, "trainable_blocks": 2}))
    frozen = ["bn0", "conv_block1", "conv_block2", "conv_block3", "conv_block4"]
    for name, p in model.backbone.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen), name
    stats_before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running_mean" in k}
    model.train()
    model(logmel(4, 64, 128))
    after = model.backbone.state_dict()
    for key, before in stats_before.items():
        assert torch.equal(after[key], before) == (key.split(".")[0] in frozen), key
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < count_parameters(model)


def panns_checkpoint(path: Path, backbone: Cnn14Backbone, with_sampler: bool) -> Path:
    """A file shaped like the published PANNs checkpoints: extractor and AudioSet-head keys, maybe numpy state."""
    state = {"spectrogram_extractor.stft.conv_real.weight": torch.zeros(3, 1, 8),
             "logmel_extractor.melW": torch.zeros(5, 64),
             **backbone.state_dict(),
             "fc_audioset.weight": torch.zeros(527, backbone.embedding_dim),
             "fc_audioset.bias": torch.zeros(527)}
    payload: dict = {"model": state, "iteration": 600000}
    if with_sampler:
        payload["sampler"] = {"indexes": np.arange(10), "random_state": np.random.RandomState(0).get_state()}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("with_sampler", [False, True])
def test_panns_bandsplit_loads_backbone_weights(tmp_path: Path, with_sampler: bool) -> None:
    torch.manual_seed(5)
    source = Cnn14Backbone(64, TINY_CNN14)
    with torch.no_grad():
        source.bn0.running_mean.uniform_(-1, 1)
    path = panns_checkpoint(tmp_path / "Cnn14_16k_mAP=0.438.pth", source, with_sampler)
    cfg = CONFIGS["panns_bandsplit"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained" warning when weights are given
        model = build_model(ModelConfig(cfg.arch, 4, 64, {**cfg.settings, "backbone_weights": str(path)}))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_panns_bandsplit_missing_weights_file(tmp_path: Path) -> None:
    cfg = CONFIGS["panns_bandsplit"]
    missing = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    with pytest.raises(FileNotFoundError, match=r"Cnn14_16k_mAP=0\.438\.pth.*3987831"):
        build_model(ModelConfig(cfg.arch, 4, 64, {**cfg.settings, "backbone_weights": str(missing)}))


def test_panns_bandsplit_warns_when_untrained() -> None:
    with pytest.warns(UserWarning, match="UNTRAINED"):
        build_model(CONFIGS["panns_bandsplit"])


def test_panns_bandsplit_checkpoint_needs_no_weights_file(tmp_path: Path) -> None:
    """The backbone file only initialises training: loading (and so exporting) a checkpoint must not need it."""
    torch.manual_seed(1)
    weights = panns_checkpoint(tmp_path / "cnn14.pth", Cnn14Backbone(64, TINY_CNN14), with_sampler=False)
    base = CONFIGS["panns_bandsplit"]
    cfg = ModelConfig(base.arch, 4, 64, {**base.settings, "backbone_weights": str(weights)})
    model = build(cfg)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, ModelSpec(FeatureConfig(), cfg, LABELS))
    weights.unlink()  # a serving machine does not have it
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nor an "untrained backbone" warning
        clf = load_classifier(ckpt, backend="eager")  # builds as export_model does (Checkpoint.build)
    x = logmel(2, 64, 128)
    with torch.no_grad():
        np.testing.assert_allclose(clf.logits(x), model(x).numpy(), atol=1e-5)


def test_cnn14_classifier_loads_pretrained_and_freezes(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = Cnn14Backbone(64, TINY_CNN14)
    path = panns_checkpoint(tmp_path / "Cnn14_mAP=0.431.pth", source, with_sampler=True)
    settings = {"channels": TINY_CNN14, "pretrained_path": str(path), "freeze_blocks": 3}
    model = build_model(ModelConfig("cnn14", 4, 64, settings))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    trainable = {name.split(".")[1] for name, p in model.backbone.named_parameters(prefix="backbone") if p.requires_grad}
    assert trainable == {"conv_block4", "conv_block5", "conv_block6", "fc1"}
    assert model.head.weight.requires_grad


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_unknown_setting_is_refused_by_name(arch: str) -> None:
    cfg = ModelConfig(arch, 3, 64, {"no_such_setting": 1})
    with pytest.raises(ValueError, match="no_such_setting"):
        build_model(cfg)


# ----------------------------------------------------------------------------- bandsplit_bilstm time pooling


def test_bandsplit_time_pool_shortens_the_sequence_and_exports(tmp_path: Path) -> None:
    """``time_pool`` [4, 2]: the BiLSTM sees T/8 steps (half the default's), the active-frame mask is pooled
    to the same steps for any T, every backend equals eager, and the cost falls."""
    settings = {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 32, "input_norm": "cmn", "pooling": "masked_stats"}
    cfg = ModelConfig("bandsplit_bilstm", 4, 64, {**settings, "time_pool": [4, 2]})
    model = build(cfg, seed=5)
    assert model.time_factor == 8
    seen: list[int] = []
    model.lstm.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[1]))
    for frames in (64, 497, 500):  # divisible by 8 or not
        x = logmel(3, 64, frames, seed=frames)
        x[0, :, : frames // 2] = -40.0  # a start-up window: half of it padding, below the floor
        with torch.no_grad():
            out = model(x)
        assert out.shape == (3, 4) and torch.isfinite(out).all()
        assert seen[-1] == frames // 8
    default = ModelConfig("bandsplit_bilstm", 4, 64, settings)
    assert count_flops(model, 64, 497) < 0.7 * count_flops(build(default), 64, 497)

    spec = ModelSpec(FeatureConfig(n_mels=64), cfg, LABELS, {"name": "test-time-pool"})
    model_dir = export_model(save_checkpoint(tmp_path / "ckpt.pt", model, spec), tmp_path / "model")
    x = logmel(3, 64, 497, seed=11)
    with torch.no_grad():
        expected = model(x).numpy()
    for backend, name in MODEL_FILES.items():
        clf = load_classifier(model_dir / name, backend=backend)
        assert clf.model_config.settings["time_pool"] == [4, 2]
        np.testing.assert_allclose(clf.logits(x.numpy()), expected, rtol=0, atol=BACKEND_TOL, err_msg=backend)


@pytest.mark.parametrize("time_pool", [[4], [4, 2, 2], [0, 2]])
def test_bandsplit_time_pool_needs_one_positive_factor_per_block(time_pool: list[int]) -> None:
    with pytest.raises(ValueError, match="time_pool"):
        build_model(ModelConfig("bandsplit_bilstm", 4, 64, {"channels": [8, 16], "time_pool": time_pool}))
