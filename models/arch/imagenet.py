"""ImageNet CNNs on spectrograms: the input adapter (log-mel -> image) and loading torchvision's published weights.

torchvision's wheels do not import beside this project's CPU torch build (README, "ImageNet CNNs"), so
``resnet`` and ``densenet`` are written here with torchvision's parameter names: a state dict that
torchvision publishes (``resnet50-0676ba61.pth``, ``densenet121-a639ec97.pth``, ...) loads into the
backbone as it is. The user downloads the file and names it in the settings (``imagenet_weights``);
nothing is fetched at run time.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from emostream.models.arch.layers import NORM_MODES, WindowNorm

TORCHVISION_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnext50_32x4d": "https://download.pytorch.org/models/resnext50_32x4d-7cdf4587.pth",
    "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
    "densenet161": "https://download.pytorch.org/models/densenet161-8d451a50.pth",
}
"""torchvision's ImageNet-1k (V1) state dicts for the shapes this project builds."""
STEM_KEYS = {"resnet": "conv1.weight", "densenet": "features.conv0.weight"}
"""The first convolution of each family: 3 input channels in the published files."""
HEAD_PREFIXES = {"resnet": "fc.", "densenet": "classifier."}
"""The 1000-class ImageNet head of each family, dropped on load (ours has the model's classes)."""
# torchvision's DenseNet files name layer norms ``norm.1`` (PyTorch < 0.4); torchvision renames on load.
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class SpectrogramImage(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> image ``(B, in_channels, n_mels, T)``, normalised as ``input_norm`` says.

    ``input_norm``: ``batch`` (BatchNorm over the mel bins, fixed statistics, as PANNs' ``bn0``) or a
    per-window ``layers.WindowNorm`` (``gain``/``cmn``: level-invariant). ``in_channels`` 3 repeats the
    one channel three times (as the reference systems fed ImageNet CNNs); 1 keeps one channel for a
    1-channel stem (whose ImageNet weights are the sum of the three colour filters).
    """

    def __init__(self, n_mels: int, in_channels: int, input_norm: str) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if input_norm not in NORM_MODES:
            raise ValueError(f"input_norm must be one of {NORM_MODES}, got {input_norm!r}")
        self.in_channels = in_channels
        self.per_window = input_norm != "batch"
        self.batch_norm = nn.BatchNorm1d(n_mels) if not self.per_window else nn.Identity()
        self.window_norm = WindowNorm(n_mels, input_norm) if self.per_window else None

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        if self.window_norm is not None:
            x = self.window_norm(logmel)[0]
        else:
            x = self.batch_norm(logmel)  # (B, n_mels, T)
        x = x.unsqueeze(1)  # (B, 1, n_mels, T)
        if self.in_channels == 3:
            x = x.repeat(1, 3, 1, 1)  # (B, 3, n_mels, T)
        return x


def read_state_dict(path: Path | str, variant: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a bare state dict, or one under ``state_dict``/``model``), read with
    ``weights_only=True``; FileNotFoundError / ValueError name the file torchvision publishes."""
    path = Path(path)
    url = TORCHVISION_WEIGHTS.get(variant, "")
    where = f" (torchvision's ImageNet weights for {variant}: {url})" if url else ""
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights file {path} not found{where}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path} is not a readable PyTorch state dict{where}: {first}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} holds no state dict of tensors{where}")
    return {_rename(str(k)): v for k, v in data.items()}


def _rename(key: str) -> str:
    """torchvision's own renames: ``module.`` of DataParallel saves, DenseNet's ``norm.1`` -> ``norm1``."""
    key = key.removeprefix("module.")
    match = _OLD_DENSENET_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


def load_imagenet_weights(backbone: nn.Module, path: Path | str, family: str, variant: str) -> list[str]:
    """Load a torchvision ImageNet state dict into ``backbone`` (strict, head dropped); returns dropped keys.

    A 1-channel stem gets the sum of the published RGB filters (the same response to a grey image).
    ValueError when the file is of another shape (another variant, other widths).
    """
    state = read_state_dict(path, variant)
    head = HEAD_PREFIXES[family]
    dropped = sorted(k for k in state if k.startswith(head))
    kept = {k: v for k, v in state.items() if not k.startswith(head)}
    stem = STEM_KEYS[family]
    own = backbone.state_dict()
    if stem in kept and stem in own and own[stem].shape[1] == 1 and kept[stem].shape[1] == 3:
        kept[stem] = kept[stem].sum(dim=1, keepdim=True)
    problems = _mismatch(own, kept)
    if problems:
        url = TORCHVISION_WEIGHTS.get(variant, "")
        raise ValueError(
            f"ImageNet weights {path} do not fit this {variant} backbone ({problems}); give the file of the "
            f"same shape{': ' + url if url else ''} and leave layers/widths at the variant's values"
        )
    backbone.load_state_dict(kept, strict=True)
    return dropped


def _mismatch(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """'' when ``given`` has exactly ``own``'s keys and shapes, else a short account of the first differences."""
    # files saved before PyTorch 0.4.1 (torchvision's densenets) have no BatchNorm counters; BatchNorm fills them
    missing = sorted(k for k in own.keys() - given.keys() if not k.endswith(".num_batches_tracked"))
    extra = sorted(given.keys() - own.keys())
    shapes = [k for k in own.keys() & given.keys() if own[k].shape != given[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if shapes:
        k = sorted(shapes)[0]
        parts.append(f"{len(shapes)} of other shape, e.g. {k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}")
    return "; ".join(parts)


def warn_untrained(arch: str, variant: str) -> None:
    """The message when no ImageNet weights are named: training starts from random weights."""
    url = TORCHVISION_WEIGHTS.get(variant)
    hint = f"download {url} and pass" if url else "pass a state dict of this shape as"
    warnings.warn(
        f"{arch}: no imagenet_weights given, so the {variant} backbone is UNTRAINED (random weights, "
        f"training from scratch); to fine-tune from ImageNet, {hint} "
        "--model-settings '{\"imagenet_weights\": \"PATH\"}'",
        stacklevel=3,
    )
