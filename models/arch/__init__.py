"""Model architectures, each built from a ModelConfig; every model maps log-mel (B, n_mels, T) to logits."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import FoldClasses

ARCHITECTURES = (
    "bandsplit_bilstm", "panns_bandsplit", "cnn_bilstm_attn", "acnt", "cnn14", "resnet", "densenet", "clip_stats",
    "ensemble",
)
# Architectures whose settings may name pretrained weights read at construction (``load_weights``).
PRETRAINED_ARCHITECTURES = ("panns_bandsplit", "cnn14", "resnet", "densenet")
# Architectures whose builder takes ``load_weights`` (the pretrained ones, and ensembles, for their members).
_TAKES_LOAD_WEIGHTS = (*PRETRAINED_ARCHITECTURES, "ensemble")


# arch name -> (module, class); each module also defines DEFAULTS, the settings it accepts.
_CLASSES: dict[str, tuple[str, str]] = {
    "bandsplit_bilstm": ("emostream.models.arch.bandsplit_bilstm", "BandSplitBiLSTM"),
    "panns_bandsplit": ("emostream.models.arch.panns_bandsplit", "PannsBandSplit"),
    "cnn_bilstm_attn": ("emostream.models.arch.cnn_bilstm_attn", "CnnBiLSTMAttn"),
    "acnt": ("emostream.models.arch.acnt", "ACNT"),
    "cnn14": ("emostream.models.arch.cnn14", "Cnn14Classifier"),
    "resnet": ("emostream.models.arch.resnet", "ResNetClassifier"),
    "densenet": ("emostream.models.arch.densenet", "DenseNetClassifier"),
    "clip_stats": ("emostream.models.arch.clip_stats", "ClipStats"),
    "ensemble": ("emostream.models.arch.ensemble", "Ensemble"),
}


def _module(arch: str) -> ModuleType:
    if arch not in _CLASSES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return importlib.import_module(_CLASSES[arch][0])


def default_settings(arch: str) -> dict[str, Any]:
    """The settings an architecture accepts, with their defaults."""
    return dict(_module(arch).DEFAULTS)


def _builder(arch: str) -> Callable[..., nn.Module]:
    return getattr(_module(arch), _CLASSES[arch][1])


PITCH_ARCHITECTURES = ("bandsplit_bilstm", "clip_stats")
"""Architectures with a ``pitch`` setting: their input has the features' two pitch rows after the mel bins."""


def uses_pitch(cfg: ModelConfig) -> bool:
    """Whether the model ``cfg`` describes takes the pitch rows (``FeatureConfig.pitch``); an ensemble
    takes them when its members do (they share one feature config)."""
    if cfg.arch == "ensemble":
        members = cfg.settings.get("members") or []
        return any(
            isinstance(m, dict) and takes_pitch(str(m.get("arch", "")), dict(m.get("settings") or {})) for m in members
        )
    return takes_pitch(cfg.arch, cfg.settings)


def takes_pitch(arch: str, settings: dict[str, Any]) -> bool:
    """Whether an architecture (not an ensemble) with these settings takes the pitch rows (its default counts)."""
    if arch not in PITCH_ARCHITECTURES:
        return False
    return bool({**default_settings(arch), **settings}.get("pitch", False))


def build_model(cfg: ModelConfig, load_weights: bool = True) -> nn.Module:
    """Build the architecture that ``cfg.arch`` names, with its settings.

    ``load_weights=False`` when a state dict will be loaded next (a checkpoint): pretrained weight files
    named in the settings are then neither read nor required to exist.
    """
    if cfg.fold:
        head = ModelConfig(cfg.arch, cfg.n_head_classes, cfg.n_mels, cfg.settings)
        return FoldClasses(build_model(head, load_weights), cfg.fold)
    builder = _builder(cfg.arch)
    unknown = set(cfg.settings) - set(default_settings(cfg.arch))
    if unknown:
        raise ValueError(
            f"unknown {cfg.arch} settings: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(default_settings(cfg.arch)))}"
        )
    if cfg.arch in _TAKES_LOAD_WEIGHTS:
        return builder(cfg, load_weights=load_weights)  # type: ignore[call-arg]
    return builder(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "ModelConfig", "build_model", "count_parameters", "default_settings"]
