"""An ensemble of trained models in one model file: the mean of the members' class probabilities.

Settings: ``members``, a list of ``{"arch": ..., "settings": {...}}`` (optionally ``"fold"``), each
built as its own architecture with the ensemble's classes and mel bins. The output is the log of the
members' mean probabilities, so a softmax over it gives exactly that mean: TorchScript, ONNX and
eager models stay interchangeable and the streamer needs no change. ``models.ensemble.combine``
writes one from trained model files. When some members take the features' pitch rows
(``FeatureConfig.pitch``) and others do not, the ensemble's features have them and the others get the
mel rows only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig

DEFAULTS: dict[str, Any] = {"members": []}


def member_configs(cfg: ModelConfig) -> list[ModelConfig]:
    """The members' model configs, checked: at least two, each naming an architecture other than an ensemble."""
    members = cfg.settings.get("members") or []
    if not isinstance(members, list) or len(members) < 2:
        raise ValueError("an ensemble needs a list of at least two members, each {'arch': ..., 'settings': {...}}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or "arch" not in m or set(m) - {"arch", "settings", "fold"}:
            raise ValueError(f"ensemble member {i} must be {{'arch': ..., 'settings': {{...}}}}, got {m!r}")
        if m["arch"] == "ensemble":
            raise ValueError(f"ensemble member {i} is itself an ensemble: list its members instead")
        out.append(
            ModelConfig(
                arch=str(m["arch"]),
                n_classes=cfg.n_classes,
                n_mels=cfg.n_mels,
                settings=dict(m.get("settings") or {}),
                fold=tuple(tuple(g) for g in m.get("fold", ())),
            )
        )
    return out


class Ensemble(nn.Module):
    __constants__ = ["n_mels"]

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        from emostream.models.arch import build_model, uses_pitch  # the registry imports this module lazily

        configs = member_configs(cfg)
        self.members = nn.ModuleList(build_model(m, load_weights) for m in configs)
        self.mel_only = [not uses_pitch(m) for m in configs]
        self.n_mels = cfg.n_mels
        self.log_n = math.log(len(self.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logps: list[torch.Tensor] = []
        mel = x[:, : self.n_mels, :]
        for i, member in enumerate(self.members):
            logps.append(torch.log_softmax(member(mel if self.mel_only[i] else x), dim=-1))
        return torch.logsumexp(torch.stack(logps, dim=0), dim=0) - self.log_n
