"""cnn14: the PANNs Cnn14 backbone (state-dict keys as in the published checkpoints) and a classifier on it."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from emostream.models.arch.config import ModelConfig

DEFAULTS: dict = {
    "channels": [64, 128, 256, 512, 1024, 2048],
    "pretrained_path": None,
    "freeze_blocks": 0,
    "dropout": 0.5,
}

CNN14_CHANNELS = [64, 128, 256, 512, 1024, 2048]
N_BLOCKS = 6
N_POOLS = 5  # blocks 1-5 halve time and frequency; block 6 does not pool
MIN_FRAMES = 2**N_POOLS
PANNS_RECORD_URL = "https://zenodo.org/record/3987831"
# Keys of a PANNs checkpoint that are not backbone weights: its own STFT and mel filterbank (we
# compute features in models.features) and its AudioSet head.
EXTRACTOR_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
AUDIOSET_HEAD_PREFIX = "fc_audioset."


class Cnn14ConvBlock(nn.Module):
    """PANNs ConvBlock: (Conv3x3 -> BN -> ReLU) x 2 -> avg-pool; ``(B, C_in, T, F) -> (B, C_out, T/p, F/p)``."""

    def __init__(self, in_ch: int, out_ch: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.pool = pool
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool > 1:
            x = F.avg_pool2d(x, kernel_size=self.pool)
        return x


class Cnn14Backbone(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> embedding ``(B, channels[-1])``, the PANNs Cnn14 computation.

    The attribute names (``bn0``, ``conv_block1`` .. ``conv_block6``, ``fc1``) are those of
    ``panns_inference.models.Cnn14``, so its checkpoints load with :func:`load_panns_state_dict`.
    PANNs lays the input out as ``(B, 1, T, mel)`` and applies ``bn0`` over the mel bins through two
    transposes; this module does the same, so the pretrained weights mean the same thing.
    Needs ``T >= 32`` frames (five 2x2 poolings) and ``n_mels >= 32``.
    """

    def __init__(self, n_mels: int, channels: list[int] | None = None, block_dropout: float = 0.2,
                 embedding_dropout: float = 0.5) -> None:
        super().__init__()
        channels = list(CNN14_CHANNELS if channels is None else channels)
        if len(channels) != N_BLOCKS or any(int(c) <= 0 for c in channels):
            raise ValueError(f"Cnn14 needs {N_BLOCKS} positive channel counts, got {channels}")
        if n_mels < MIN_FRAMES:
            raise ValueError(f"Cnn14 pools frequency {N_POOLS} times: needs n_mels >= {MIN_FRAMES}, got {n_mels}")
        self.n_mels = n_mels
        self.embedding_dim = int(channels[-1])
        self.block_dropout = block_dropout
        self.embedding_dropout = embedding_dropout
        self.n_frozen_blocks = 0
        self.bn0 = nn.BatchNorm2d(n_mels)
        ins = [1] + [int(c) for c in channels[:-1]]
        outs = [int(c) for c in channels]
        self.conv_block1 = Cnn14ConvBlock(ins[0], outs[0], pool=2)
        self.conv_block2 = Cnn14ConvBlock(ins[1], outs[1], pool=2)
        self.conv_block3 = Cnn14ConvBlock(ins[2], outs[2], pool=2)
        self.conv_block4 = Cnn14ConvBlock(ins[3], outs[3], pool=2)
        self.conv_block5 = Cnn14ConvBlock(ins[4], outs[4], pool=2)
        self.conv_block6 = Cnn14ConvBlock(ins[5], outs[5], pool=1)
        self.fc1 = nn.Linear(outs[5], outs[5], bias=True)
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)

    def blocks(self) -> list[nn.Module]:
        return [self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4, self.conv_block5,
                self.conv_block6]

    def freeze(self, n_blocks: int) -> None:
        """Freeze ``bn0`` and the first ``n_blocks`` conv blocks (no gradients, BN statistics kept fixed)."""
        if not 0 <= n_blocks <= N_BLOCKS:
            raise ValueError(f"can freeze 0..{N_BLOCKS} blocks, got {n_blocks}")
        self.n_frozen_blocks = n_blocks
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.n_frozen_blocks == 0:
            return []
        return [self.bn0] + self.blocks()[: self.n_frozen_blocks]

    def train(self, mode: bool = True) -> Cnn14Backbone:
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()  # frozen BatchNorms keep their (pretrained) running statistics
        return self

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.bn0(logmel.unsqueeze(3))  # (B, mel, T, 1): PANNs' x.transpose(1, 3) before bn0
        x = x.transpose(1, 3)  # (B, 1, T, mel)
        x = F.dropout(self.conv_block1(x), p=self.block_dropout, training=self.training)  # (B, C1, T/2, mel/2)
        x = F.dropout(self.conv_block2(x), p=self.block_dropout, training=self.training)
        x = F.dropout(self.conv_block3(x), p=self.block_dropout, training=self.training)
        x = F.dropout(self.conv_block4(x), p=self.block_dropout, training=self.training)
        x = F.dropout(self.conv_block5(x), p=self.block_dropout, training=self.training)
        x = F.dropout(self.conv_block6(x), p=self.block_dropout, training=self.training)  # (B, C6, T/32, mel/32)
        x = x.mean(dim=3)  # (B, C6, T/32): mean over frequency
        x = x.amax(dim=2) + x.mean(dim=2)  # (B, C6): max + mean over time
        x = F.dropout(x, p=self.embedding_dropout, training=self.training)
        return F.relu(self.fc1(x))  # (B, C6)


def read_panns_checkpoint(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of a PANNs checkpoint file, read with ``weights_only=True``.

    The published files hold ``{"model": state_dict, ...}``; some also hold a sampler state with numpy
    arrays, which ``weights_only`` refuses by default: numpy's array reconstructors (and only those) are
    then allowed, never arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"PANNs checkpoint {path} not found; the published Cnn14 checkpoints (Cnn14_mAP=0.431.pth for "
            f"32 kHz, Cnn14_16k_mAP=0.438.pth for 16 kHz) are in Zenodo record 3987831: {PANNS_RECORD_URL}"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not unsafe or not all(name.startswith("numpy.") for name in unsafe):
            raise
        with torch.serialization.safe_globals(_numpy_globals(unsafe)):
            data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} holds no PANNs state dict")
    return data


def _numpy_globals(names: list[str]) -> list:
    """The numpy reconstructors a checkpoint names (under those names) and numpy's dtype classes."""
    import importlib

    import numpy as np

    found: list = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        found.append((getattr(importlib.import_module(module_name), attr), name))
    found.extend({type(np.dtype(code)) for code in np.typecodes["All"]})
    return found


def load_panns_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load a PANNs Cnn14 state dict into ``module`` (a :class:`Cnn14Backbone`); return the dropped keys.

    Dropped: the feature extractor (``spectrogram_extractor.*``, ``logmel_extractor.*``) and, unless
    ``module`` has one, the AudioSet head ``fc_audioset.*``. The rest must match exactly (strict).
    """
    own = module.state_dict().keys()
    keep_head = any(k.startswith(AUDIOSET_HEAD_PREFIX) for k in own)
    dropped = [
        k for k in state_dict
        if k.startswith(EXTRACTOR_PREFIXES) or (k.startswith(AUDIOSET_HEAD_PREFIX) and not keep_head)
    ]
    kept = {k: v for k, v in state_dict.items() if k not in set(dropped)}
    module.load_state_dict(kept, strict=True)
    return sorted(dropped)


def load_panns_weights(backbone: Cnn14Backbone, path: Path | str) -> list[str]:
    """Read a PANNs checkpoint file into ``backbone``; returns the dropped keys."""
    try:
        return load_panns_state_dict(backbone, read_panns_checkpoint(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"PANNs checkpoint {path} does not fit this Cnn14 backbone: {first}") from None


class Cnn14Classifier(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``: Cnn14 backbone + linear head.

    Settings: ``channels`` (6 counts; the published ones by default), ``pretrained_path`` (a PANNs
    checkpoint read at construction unless ``load_weights`` is False, as when a state dict follows),
    ``freeze_blocks`` (freeze ``bn0`` and the first blocks), ``dropout`` (before fc1 and the head).
    """

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        self.backbone = Cnn14Backbone(cfg.n_mels, list(s["channels"]), embedding_dropout=float(s["dropout"]))
        if s["pretrained_path"] and load_weights:
            load_panns_weights(self.backbone, s["pretrained_path"])
        self.backbone.freeze(int(s["freeze_blocks"]))
        self.dropout = nn.Dropout(float(s["dropout"]))
        self.head = nn.Linear(self.backbone.embedding_dim, cfg.n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(logmel)))
