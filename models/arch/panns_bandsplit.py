"""panns_bandsplit: the Urdu band-split PANNs classifier: Cnn14 global embedding + band-split encoders, fused."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from emostream.models.arch.bandsplit_bilstm import BandAttention, BandEncoder
from emostream.models.arch.cnn14 import CNN14_CHANNELS, N_BLOCKS, Cnn14Backbone, load_panns_weights
from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import AttentionPool, band_edges

DEFAULTS: dict = {
    "backbone_channels": list(CNN14_CHANNELS),
    "backbone_weights": None,
    "trainable_blocks": 2,
    "band_fractions": [0.25, 0.5, 0.25],
    "band_channels": [16, 32],
    "band_dim": 64,
    "head_hidden": 256,
    "dropout": 0.3,
}


class PannsBandSplit(nn.Module):
    """Log-mel ``(B, n_mels, T)`` -> logits ``(B, n_classes)``.

    Two branches, concatenated into a dense head:
    - global: the Cnn14 backbone's embedding; its ``bn0`` and first ``6 - trainable_blocks`` conv blocks
      are frozen. ``backbone_weights`` names a local PANNs checkpoint (e.g. ``Cnn14_16k_mAP=0.438.pth``,
      Zenodo record 3987831) read at construction unless ``load_weights`` is False (a state dict follows);
    - bands: the mel bins split low/mid/high (``band_fractions``), a CNN encoder per band, attention
      across the bands per time step, then attention pooling over time.
    ``backbone_channels`` scales the backbone (the published Cnn14 by default; small for tests).
    """

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        trainable = int(s["trainable_blocks"])
        if not 0 <= trainable <= N_BLOCKS:
            raise ValueError(f"trainable_blocks must be in 0..{N_BLOCKS}, got {trainable}")
        self.backbone = Cnn14Backbone(cfg.n_mels, list(s["backbone_channels"]))
        if load_weights:
            if s["backbone_weights"]:
                load_panns_weights(self.backbone, s["backbone_weights"])
            else:
                warnings.warn(
                    "panns_bandsplit: no backbone_weights given, so the Cnn14 backbone is UNTRAINED (random "
                    "weights) and its frozen blocks will stay random; pass the path of a PANNs checkpoint "
                    "(e.g. Cnn14_16k_mAP=0.438.pth from Zenodo record 3987831)",
                    stacklevel=2,
                )
        self.backbone.freeze(N_BLOCKS - trainable)
        self.edges = band_edges(cfg.n_mels, list(s["band_fractions"]))
        band_dim = int(s["band_dim"])
        self.band_norm = nn.BatchNorm1d(cfg.n_mels)
        self.encoders = nn.ModuleList(
            [BandEncoder(list(s["band_channels"]), band_dim) for _ in range(len(self.edges) - 1)]
        )
        self.band_attention = BandAttention(band_dim)
        self.band_pool = AttentionPool(band_dim)
        hidden = int(s["head_hidden"])
        self.head = nn.Sequential(
            nn.Linear(self.backbone.embedding_dim + band_dim, hidden),
            nn.ReLU(),
            nn.Dropout(float(s["dropout"])),
            nn.Linear(hidden, cfg.n_classes),
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        global_emb = self.backbone(logmel)  # (B, E)
        x = self.band_norm(logmel).unsqueeze(1)  # (B, 1, n_mels, T)
        outs: list[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            outs.append(encoder(x[:, :, self.edges[i] : self.edges[i + 1], :]))  # (B, T', D)
        bands = torch.stack(outs, dim=2)  # (B, T', bands, D)
        band_emb = self.band_pool(self.band_attention(bands))  # (B, T', D) -> (B, D)
        return self.head(torch.cat([global_emb, band_emb], dim=1))  # (B, E + D) -> (B, n_classes)
