"""Model architectures, each built from a ModelConfig; every model maps log-mel (B, n_mels, T) to logits."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.arch.config import ModelConfig

ARCHITECTURES = ("bandsplit_bilstm", "panns_bandsplit", "cnn_bilstm_attn", "acnt", "cnn14")
# Architectures whose settings may name pretrained weights read at construction (``load_weights``).
PRETRAINED_ARCHITECTURES = ("panns_bandsplit", "cnn14")


def _builder(arch: str) -> Callable[[ModelConfig], nn.Module]:
    if arch == "bandsplit_bilstm":
        from models.arch.bandsplit_bilstm import BandSplitBiLSTM

        return BandSplitBiLSTM
    if arch == "panns_bandsplit":
        from models.arch.panns_bandsplit import PannsBandSplit

        return PannsBandSplit
    if arch == "cnn_bilstm_attn":
        from models.arch.cnn_bilstm_attn import CnnBiLSTMAttn

        return CnnBiLSTMAttn
    if arch == "acnt":
        from models.arch.acnt import ACNT

        return ACNT
    if arch == "cnn14":
        from models.arch.cnn14 import Cnn14Classifier

        return Cnn14Classifier
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def build_model(cfg: ModelConfig, load_weights: bool = True) -> nn.Module:
    """Build the architecture that ``cfg.arch`` names, with its settings.

    ``load_weights=False`` when a state dict will be loaded next (a checkpoint): pretrained weight files
    named in the settings are then neither read nor required to exist.
    """
    builder = _builder(cfg.arch)
    if cfg.arch in PRETRAINED_ARCHITECTURES:
        return builder(cfg, load_weights=load_weights)  # type: ignore[call-arg]
    return builder(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "ModelConfig", "build_model", "count_parameters"]
