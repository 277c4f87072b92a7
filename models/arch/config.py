"""The model config: which architecture, its size, and its settings; travels inside every model file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture name plus its settings (JSON-able values only)."""

    arch: str
    n_classes: int
    n_mels: int
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.n_mels < 4:
            raise ValueError(f"n_mels must be >= 4, got {self.n_mels}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "n_classes": self.n_classes,
            "n_mels": self.n_mels,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = set(data) - {"arch", "n_classes", "n_mels", "settings"}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(
            arch=str(data["arch"]),
            n_classes=int(data["n_classes"]),
            n_mels=int(data["n_mels"]),
            settings=dict(data.get("settings", {})),
        )
