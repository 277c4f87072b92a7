"""Classification metrics from a confusion matrix: WA, UA, macro-F1, per-class precision / recall / F1.

Conventions (stated once, used everywhere):
- ``confusion[i, j]`` counts clips of true class ``i`` predicted as class ``j``.
- WA (weighted accuracy) = correct / all clips.
- UA (unweighted accuracy) = mean recall over the classes that occur in the truth; a class the
  data set does not contain (URDU has no ``fearful``) is left out of UA and macro-F1, but
  predictions *into* it still count as errors of the true class.
- macro-F1 = mean F1 over the same classes; F1 of a class with no correct prediction is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def confusion_matrix(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], n_classes: int
) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts, rows = truth, columns = prediction."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(frozen=True, slots=True)
class Metrics:
    """Everything one confusion matrix says; ``labels`` names its rows and columns."""

    labels: tuple[str, ...]
    confusion: np.ndarray
    n: int
    wa: float
    ua: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "wa": self.wa,
            "ua": self.ua,
            "macro_f1": self.macro_f1,
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
        }


def metrics_from_confusion(confusion: np.ndarray, labels: tuple[str, ...] | list[str]) -> Metrics:
    """WA, UA, macro-F1 and per-class scores of a confusion matrix (conventions in the module docstring)."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(
            f"confusion must be square with one row per label, got {cm.shape} for {len(labels)} labels"
        )
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    per_class = {
        label: ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, label in enumerate(labels)
    }
    return Metrics(
        labels=tuple(labels),
        confusion=cm,
        n=n,
        wa=float(tp.sum() / n) if n else 0.0,
        ua=float(recall[present].mean()) if present.any() else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_class=per_class,
    )


def compute_metrics(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], labels: tuple[str, ...] | list[str]
) -> Metrics:
    """``metrics_from_confusion`` of the predictions."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(labels)), labels)


def plot_confusion(metrics_by_name: dict[str, Metrics], path: str, title: str = "") -> None:
    """One row-normalised confusion heat map per data set, side by side, saved as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics_by_name)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        m = metrics_by_name[name]
        rows = m.confusion.sum(axis=1, keepdims=True)
        norm = np.divide(m.confusion, rows, out=np.zeros(m.confusion.shape), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ticks = range(len(m.labels))
        ax.set_xticks(ticks, [label[:4] for label in m.labels], rotation=45)
        ax.set_yticks(ticks, [label[:4] for label in m.labels])
        for i in ticks:
            for j in ticks:
                if m.confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(m.confusion[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
        ax.set_title(f"{name}: UA {100 * m.ua:.1f} %, n={m.n}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
