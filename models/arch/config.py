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
    fold: tuple[tuple[int, ...], ...] = ()
    """Classes trained apart and merged at inference: ``fold[j]`` lists the head's classes whose
    probabilities sum into output class ``j`` (e.g. neutral and calm into neutral). Empty: the head's
    classes are the outputs. The head then has ``n_head_classes`` outputs, the model ``n_classes``."""

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.n_mels < 4:
            raise ValueError(f"n_mels must be >= 4, got {self.n_mels}")
        fold = tuple(tuple(int(i) for i in group) for group in self.fold)
        object.__setattr__(self, "fold", fold)
        if fold:
            members = sorted(i for group in fold for i in group)
            if len(fold) != self.n_classes or any(not group for group in fold):
                raise ValueError(f"fold needs one non-empty group per class ({self.n_classes}), got {fold}")
            if members != list(range(len(members))):
                raise ValueError(f"fold must use each head class 0..{len(members) - 1} exactly once, got {fold}")

    @property
    def n_head_classes(self) -> int:
        """How many classes the trained head has (``n_classes`` unless classes are folded)."""
        return sum(len(group) for group in self.fold) if self.fold else self.n_classes

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "arch": self.arch,
            "n_classes": self.n_classes,
            "n_mels": self.n_mels,
            "settings": dict(self.settings),
        }
        if self.fold:
            data["fold"] = [list(group) for group in self.fold]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = set(data) - {"arch", "n_classes", "n_mels", "settings", "fold"}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(
            arch=str(data["arch"]),
            n_classes=int(data["n_classes"]),
            n_mels=int(data["n_mels"]),
            settings=dict(data.get("settings", {})),
            fold=tuple(tuple(group) for group in data.get("fold", ())),
        )
