"""resnet: ResNet / ResNeXt (18, 34, 50, 50_32x4d shapes) on log-mel, with torchvision's parameter names.

The reference systems fine-tuned ImageNet ResNet50 / ResNeXt50_32x4d on 3-channel mel spectrograms, and
a modified ResNet50 with its own input layer and dropout; both are settings here (``in_channels``,
``dropout``, ``imagenet_weights``). The backbone's state-dict keys (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ...) are torchvision's, so its published weights load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.imagenet import SpectrogramImage, load_imagenet_weights, warn_untrained

VARIANTS: dict[str, dict] = {
    "resnet18": {"block": "basic", "layers": [2, 2, 2, 2], "groups": 1, "width_per_group": 64},
    "resnet34": {"block": "basic", "layers": [3, 4, 6, 3], "groups": 1, "width_per_group": 64},
    "resnet50": {"block": "bottleneck", "layers": [3, 4, 6, 3], "groups": 1, "width_per_group": 64},
    "resnext50_32x4d": {"block": "bottleneck", "layers": [3, 4, 6, 3], "groups": 32, "width_per_group": 4},
}
"""torchvision's shapes; ``block``/``layers``/``groups``/``width_per_group`` settings override them."""

DEFAULTS: dict = {
    "variant": "resnet18",
    "block": None,  # "basic" or "bottleneck"; None: the variant's
    "layers": None,  # blocks per stage (4 stages); None: the variant's
    "groups": None,
    "width_per_group": None,
    "base_channels": 64,  # stem and first stage; stages have base * (1, 2, 4, 8) (x4 for bottlenecks)
    "in_channels": 3,  # 3: the spectrogram repeated (ImageNet stem); 1: a 1-channel stem
    "input_norm": "batch",
    "dropout": 0.0,  # before the linear head
    "imagenet_weights": None,  # path of a torchvision state dict of the same variant
}
MIN_MELS = 32  # stem stride 2, max-pool, three strided stages: 32x smaller


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convolutions and the residual; ``(B, C_in, H, W) -> (B, C, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, groups: int,
                 width_per_group: int) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("basic blocks need groups=1 and width_per_group=64 (as torchvision's)")
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3, ResNet v1.5; grouped for ResNeXt): 1x1, 3x3, 1x1, residual."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, groups: int,
                 width_per_group: int) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """Image ``(B, in_channels, H, W)`` -> embedding ``(B, embedding_dim)``: stem, four stages, global mean.

    Attribute names follow ``torchvision.models.ResNet`` (without its ``fc``), so its state dicts load.
    """

    def __init__(self, block: str, layers: list[int], groups: int, width_per_group: int, base_channels: int,
                 in_channels: int) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be basic or bottleneck, got {block!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        self.block_cls = BasicBlock if block == "basic" else Bottleneck
        self.groups, self.width_per_group = int(groups), int(width_per_group)
        self.in_ch = int(base_channels)
        self.conv1 = nn.Conv2d(in_channels, self.in_ch, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(base_channels, int(layers[0]), 1)
        self.layer2 = self._stage(base_channels * 2, int(layers[1]), 2)
        self.layer3 = self._stage(base_channels * 4, int(layers[2]), 2)
        self.layer4 = self._stage(base_channels * 8, int(layers[3]), 2)
        self.embedding_dim = base_channels * 8 * self.block_cls.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        out_ch = planes * self.block_cls.expansion
        downsample = None
        if stride != 1 or self.in_ch != out_ch:
            downsample = nn.Sequential(nn.Conv2d(self.in_ch, out_ch, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_ch))
        blocks = [self.block_cls(self.in_ch, planes, stride, downsample, self.groups, self.width_per_group)]
        self.in_ch = out_ch
        blocks += [self.block_cls(out_ch, planes, 1, None, self.groups, self.width_per_group)
                   for _ in range(1, n_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, base, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, E, H/32, W/32)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, E)


def resolve(settings: dict) -> dict:
    """The settings with the variant's shape filled in where they say None."""
    s = {**DEFAULTS, **settings}
    if s["variant"] not in VARIANTS:
        raise ValueError(f"unknown resnet variant {s['variant']!r}; known: {', '.join(VARIANTS)}")
    for key, value in VARIANTS[s["variant"]].items():
        if s[key] is None:
            s[key] = value
    return s


class ResNetClassifier(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``: spectrogram image, ResNet backbone, linear head.

    ``imagenet_weights`` is read at construction unless ``load_weights`` is False (a checkpoint's state
    dict follows, and a serving machine need not have the file). Needs ``n_mels >= 32``.
    """

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        s = resolve(cfg.settings)
        if cfg.n_mels < MIN_MELS:
            raise ValueError(f"resnet downsamples frequency 32x: needs n_mels >= {MIN_MELS}, got {cfg.n_mels}")
        self.image = SpectrogramImage(cfg.n_mels, int(s["in_channels"]), str(s["input_norm"]))
        self.backbone = ResNetBackbone(s["block"], list(s["layers"]), s["groups"], s["width_per_group"],
                                       int(s["base_channels"]), int(s["in_channels"]))
        if load_weights:
            if s["imagenet_weights"]:
                load_imagenet_weights(self.backbone, s["imagenet_weights"], "resnet", s["variant"])
            else:
                warn_untrained("resnet", s["variant"])
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.head = nn.Linear(self.backbone.embedding_dim, cfg.n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(self.image(logmel))))  # (B, n_classes)
