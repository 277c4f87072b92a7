"""densenet: DenseNet (121, 161 shapes) on log-mel, with torchvision's parameter names.

The reference system fine-tuned an ImageNet DenseNet161 on 3-channel mel spectrograms. The backbone's
state-dict keys (``features.conv0``, ``features.denseblock1.denselayer1.norm1``, ``features.transition1``,
``features.norm5``) are torchvision's, so its published weights load (the old ``norm.1`` spelling in those
files is renamed on load, as torchvision does).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.imagenet import SpectrogramImage, load_imagenet_weights, warn_untrained

VARIANTS: dict[str, dict] = {
    "densenet121": {"growth_rate": 32, "block_config": [6, 12, 24, 16], "num_init_features": 64},
    "densenet161": {"growth_rate": 48, "block_config": [6, 12, 36, 24], "num_init_features": 96},
}
"""torchvision's shapes; the settings of the same names override them."""

DEFAULTS: dict = {
    "variant": "densenet121",
    "growth_rate": None,
    "block_config": None,  # dense layers per block; None: the variant's
    "num_init_features": None,
    "bn_size": 4,
    "drop_rate": 0.0,  # dropout after each dense layer (torchvision's)
    "in_channels": 3,
    "input_norm": "batch",
    "dropout": 0.0,  # before the linear head
    "imagenet_weights": None,
}
MIN_MELS = 32  # stem stride 2, max-pool, three transitions: 32x smaller


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (``bn_size * growth`` channels), BN-ReLU-3x3 conv (``growth``): ``(B, C, H, W) -> (B, growth, H, W)``."""

    def __init__(self, in_ch: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, p=self.drop_rate, training=self.training)


class DenseBlock(nn.ModuleDict):
    """``denselayer1..N``, each fed the concatenation of the block input and every earlier layer's output."""

    def __init__(self, n_layers: int, in_ch: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_ch + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for _, layer in self.items():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)  # (B, C_in + n_layers * growth, H, W)


def transition(in_ch: int, out_ch: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv, 2x2 mean pool: halves the channels and both axes."""
    return nn.Sequential(OrderedDict([
        ("norm", nn.BatchNorm2d(in_ch)),
        ("relu", nn.ReLU(inplace=True)),
        ("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False)),
        ("pool", nn.AvgPool2d(2, stride=2)),
    ]))


class DenseNetBackbone(nn.Module):
    """Image ``(B, in_channels, H, W)`` -> embedding ``(B, embedding_dim)``; ``features`` as in torchvision's DenseNet."""

    def __init__(self, growth_rate: int, block_config: list[int], num_init_features: int, bn_size: int,
                 drop_rate: float, in_channels: int) -> None:
        super().__init__()
        if len(block_config) != 4 or any(int(n) < 1 for n in block_config):
            raise ValueError(f"block_config must be 4 positive layer counts, got {block_config}")
        layers: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(in_channels, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]
        ch = num_init_features
        for i, n_layers in enumerate(block_config):
            layers.append((f"denseblock{i + 1}", DenseBlock(int(n_layers), ch, growth_rate, bn_size, drop_rate)))
            ch += int(n_layers) * growth_rate
            if i != len(block_config) - 1:
                layers.append((f"transition{i + 1}", transition(ch, ch // 2)))
                ch //= 2
        layers.append(("norm5", nn.BatchNorm2d(ch)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.embedding_dim = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))  # (B, E, H/32, W/32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, E)


def resolve(settings: dict) -> dict:
    """The settings with the variant's shape filled in where they say None."""
    s = {**DEFAULTS, **settings}
    if s["variant"] not in VARIANTS:
        raise ValueError(f"unknown densenet variant {s['variant']!r}; known: {', '.join(VARIANTS)}")
    for key, value in VARIANTS[s["variant"]].items():
        if s[key] is None:
            s[key] = value
    return s


class DenseNetClassifier(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``: spectrogram image, DenseNet backbone, linear head.

    ``imagenet_weights`` is read at construction unless ``load_weights`` is False. Needs ``n_mels >= 32``.
    """

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        s = resolve(cfg.settings)
        if cfg.n_mels < MIN_MELS:
            raise ValueError(f"densenet downsamples frequency 32x: needs n_mels >= {MIN_MELS}, got {cfg.n_mels}")
        self.image = SpectrogramImage(cfg.n_mels, int(s["in_channels"]), str(s["input_norm"]))
        self.backbone = DenseNetBackbone(int(s["growth_rate"]), list(s["block_config"]), int(s["num_init_features"]),
                                         int(s["bn_size"]), float(s["drop_rate"]), int(s["in_channels"]))
        if load_weights:
            if s["imagenet_weights"]:
                load_imagenet_weights(self.backbone, s["imagenet_weights"], "densenet", s["variant"])
            else:
                warn_untrained("densenet", s["variant"])
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.head = nn.Linear(self.backbone.embedding_dim, cfg.n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(self.image(logmel))))  # (B, n_classes)
