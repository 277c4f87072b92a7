"""An ensemble of trained models in one model file: the mean of the members' class probabilities.

Settings: ``members``, a list of ``{"arch": ..., "settings": {...}}`` (optionally ``"fold"``), each
built as its own architecture with the ensemble's classes and mel bins. The output is the log of the
members' mean probabilities, so a softmax over it gives exactly that mean: TorchScript, ONNX and
eager models stay interchangeable and the streamer needs no change. ``models.ensemble.combine``
writes one from trained model files. When some members take the features' pitch rows
(``FeatureConfig.pitch``) and others do not, the ensemble's features have them and the others get the
mel rows only.

**Narrowband members** (setting ``narrowband`` and a ``band`` per member, since 2026-12-06): a member
tagged ``"wide"`` counts only where the window is wideband and one tagged ``"narrow"`` only where it is
narrowband (a telephone line, a narrowband headset: nothing above about 4 kHz); untagged members always
count. The model decides per window: over its present frames (within ``FLOOR_DB`` of the loudest bin's
level, so padding and digital silence are left out), the mean power of the mel bins ``high_bins`` (above
the band a narrowband channel carries) relative to that of ``band_bins`` (the telephone band), in dB;
the narrowband weight is ``sigmoid((threshold_db - ratio) / width_db)``. The output is the log of the
members' probabilities averaged with those weights, so a wideband window gets the mean of the untagged
and wide members, a narrowband window that of the untagged and narrow ones. Relative to the window, so
a gain changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import DB_TO_LN, present_frames

DEFAULTS: dict[str, Any] = {"members": [], "narrowband": None}
BANDS = {"wide": 1, "narrow": 2}
"""A member's ``band`` tag and its code in ``Ensemble.bands`` (0: untagged, counts on every window)."""
FLOOR_DB = 60.0
"""The narrowband detector's present frames: mean log-mel within this many dB of the window's loudest bin."""
NARROWBAND_KEYS = ("high_bins", "band_bins", "threshold_db", "width_db")


def member_bands(cfg: ModelConfig) -> list[int]:
    """Each member's band code (``BANDS``; 0 untagged), checked against the ``narrowband`` setting: tags need
    the detector, and at least one member must count on wideband windows and one on narrowband ones."""
    members = cfg.settings.get("members") or []
    bands = []
    for i, m in enumerate(members):
        band = m.get("band") if isinstance(m, dict) else None
        if band is not None and band not in BANDS:
            raise ValueError(f"ensemble member {i}: band is one of {', '.join(BANDS)} (or absent), got {band!r}")
        bands.append(BANDS[band] if band is not None else 0)
    gate = cfg.settings.get("narrowband")
    if any(bands) and gate is None:
        raise ValueError("an ensemble with wide/narrow members needs the 'narrowband' detector setting")
    if gate is not None:
        narrowband_setting(gate, cfg.n_mels)
        if not any(b in (0, 1) for b in bands) or not any(b in (0, 2) for b in bands):
            raise ValueError("an ensemble with a narrowband detector needs members for wideband and for narrowband windows")
    return bands


def narrowband_setting(gate: Any, n_mels: int) -> tuple[tuple[int, int], tuple[int, int], float, float]:
    """The ``narrowband`` setting checked: high and band bins as ``[first, stop)`` within the mel bins, a
    threshold (dB) and a positive width (dB)."""
    if not isinstance(gate, dict) or set(gate) != set(NARROWBAND_KEYS):
        raise ValueError(f"narrowband is {{{', '.join(NARROWBAND_KEYS)}}}, got {gate!r}")
    ranges = []
    for key in ("high_bins", "band_bins"):
        r = gate[key]
        if not (isinstance(r, list | tuple) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                and 0 <= r[0] < r[1] <= n_mels):
            raise ValueError(f"narrowband {key} is [first, stop) within the {n_mels} mel bins, got {r!r}")
        ranges.append((int(r[0]), int(r[1])))
    threshold, width = float(gate["threshold_db"]), float(gate["width_db"])
    if not width > 0.0:
        raise ValueError(f"narrowband width_db must be above 0, got {width}")
    return ranges[0], ranges[1], threshold, width


def member_configs(cfg: ModelConfig) -> list[ModelConfig]:
    """The members' model configs, checked: at least two, each naming an architecture other than an ensemble."""
    members = cfg.settings.get("members") or []
    if not isinstance(members, list) or len(members) < 2:
        raise ValueError("an ensemble needs a list of at least two members, each {'arch': ..., 'settings': {...}}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or "arch" not in m or set(m) - {"arch", "settings", "fold", "band"}:
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


class NarrowbandDetector(nn.Module):
    """Log-mel ``(B, M, T)`` -> each window's narrowband weight ``(B,)`` in (0, 1) (module docstring)."""

    __constants__ = ["high_first", "high_stop", "band_first", "band_stop", "threshold", "width", "floor"]

    def __init__(self, gate: dict[str, Any], n_mels: int) -> None:
        super().__init__()
        (self.high_first, self.high_stop), (self.band_first, self.band_stop), threshold, width = narrowband_setting(
            gate, n_mels
        )
        self.threshold = threshold * DB_TO_LN  # in the features' natural-log units
        self.width = width * DB_TO_LN
        self.floor = FLOOR_DB * DB_TO_LN

    def ratio(self, x: torch.Tensor) -> torch.Tensor:
        """The present frames' mean power in ``high_bins`` over that in ``band_bins``, natural log ``(B,)``."""
        _, top, _, present = present_frames(x, self.floor)  # (B,), (B, T)
        power = torch.exp(x - top.view(-1, 1, 1))  # relative to the loudest bin: a gain changes nothing
        n = present.sum(dim=1).clamp(min=1.0)
        high = (power[:, self.high_first : self.high_stop, :].mean(dim=1) * present).sum(dim=1) / n
        band = (power[:, self.band_first : self.band_stop, :].mean(dim=1) * present).sum(dim=1) / n
        return torch.log(high.clamp(min=1e-30)) - torch.log(band.clamp(min=1e-30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((self.threshold - self.ratio(x)) / self.width)


class Ensemble(nn.Module):
    __constants__ = ["n_mels", "gated"]

    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        from emostream.models.arch import build_model, uses_pitch  # the registry imports this module lazily

        configs = member_configs(cfg)
        self.members = nn.ModuleList(build_model(m, load_weights) for m in configs)
        self.mel_only = [not uses_pitch(m) for m in configs]
        self.bands = member_bands(cfg)
        gate = cfg.settings.get("narrowband")
        self.gated = gate is not None
        # an empty stand-in when there is no detector, so TorchScript sees one type
        self.detector = NarrowbandDetector(gate, cfg.n_mels) if gate is not None else nn.Identity()
        self.n_mels = cfg.n_mels
        self.log_n = math.log(len(self.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logps: list[torch.Tensor] = []
        mel = x[:, : self.n_mels, :]
        for i, member in enumerate(self.members):
            logps.append(torch.log_softmax(member(mel if self.mel_only[i] else x), dim=-1))
        stacked = torch.stack(logps, dim=0)  # (members, B, classes)
        if not self.gated:
            return torch.logsumexp(stacked, dim=0) - self.log_n
        narrow = self.detector(mel)  # (B,)
        weights: list[torch.Tensor] = []
        for band in self.bands:
            if band == 1:
                weights.append(1.0 - narrow)
            elif band == 2:
                weights.append(narrow)
            else:
                weights.append(torch.ones_like(narrow))
        w = torch.stack(weights, dim=0).clamp(min=1e-12)  # (members, B)
        log_w = torch.log(w) - torch.log(w.sum(dim=0, keepdim=True))
        return torch.logsumexp(stacked + log_w.unsqueeze(2), dim=0)
