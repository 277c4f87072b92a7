"""Every setting of a training run (``TrainConfig``, saved in each checkpoint) and the recipe's defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emostream.train.augment import AugmentConfig
from emostream.train.dataset import WindowConfig
from emostream.train.recipe import ROBUST_FEATURE_SETTINGS, ROBUST_MODEL_SETTINGS

__all__ = ["LICENCE_NOTE", "ROBUST_FEATURE_SETTINGS", "ROBUST_MODEL_SETTINGS", "TrainConfig", "licence_note"]

LICENCE_NOTE = (
    "Trained on RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0), nEMO (CC BY-NC-SA 4.0) and URDU "
    "(research use only): the weights are a derived work of non-commercial data; non-commercial research use only."
)



def licence_note(datasets: list[str]) -> str:
    """The licence note a model file carries, from the corpora it was trained on."""
    from emostream.train.corpora_tasks import TASK_LICENCES

    tasks = [TASK_LICENCES[name] for name in datasets if name in TASK_LICENCES]
    if not tasks:
        return LICENCE_NOTE
    note = f"Trained on {'; '.join(tasks)}: the weights are a derived work of that data; check its licence."
    return note if len(tasks) == len(datasets) else f"{note} {LICENCE_NOTE}"


@dataclass
class TrainConfig:
    """Every setting of a training run; saved in each checkpoint's metadata."""

    data_dir: str = "../shared/data"
    datasets: tuple[str, ...] = ("ravdess", "tess", "nemo", "urdu")
    labels: str = "7class"
    label_map: str = ""
    arch: str = "bandsplit_bilstm"
    model_settings: dict[str, Any] = field(default_factory=dict)
    feature_settings: dict[str, Any] = field(default_factory=dict)
    """FeatureConfig fields to override (e.g. {"window": "hamming"})."""
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    schedule: str = "onecycle"
    """"onecycle" (peak ``lr`` after ``warmup_epochs``) or "cosine" (linear warmup, cosine decay)."""
    warmup_epochs: float = 2.0
    patience: int = 8
    """Stop after this many validations without a better validation UA (0 = never stop early)."""
    eval_every: int = 1
    label_smoothing: float = 0.05
    fold_merged: bool = False
    """Train the labels the label map merges (calm -> neutral) as classes of their own; the exported model
    sums their probabilities into the class they map to (``models.arch.ModelConfig.fold``)."""
    mixup: float = 0.0
    """Mixup's Beta(alpha, alpha) parameter on the log-mel of a batch (0 = off)."""
    mixup_prob: float = 0.5
    """Share of batches mixed when ``mixup`` > 0."""
    adversary: float = 0.0
    """``clip_stats`` with a bag of heads: the weight of the speaker adversary on the heads' hidden units
    (``train.statsfit.BaggedMLP``; 0 = none, every model file before 2026-12-06's third session)."""
    seed: int = 0
    split_seed: int | None = None
    """Seed of the speaker split (``train.splits.default_holdout``); None: ``seed``. Set it to train
    another seed (weights, sampling, augmentation) on the same held-out speakers."""
    balance: float = 0.5
    """Corpus- and speaker-balanced sampling (``train.dataset.sampling_weights``); 0 = every clip once."""
    ema_decay: float = 0.998
    """Validate, keep and export an exponential moving average of the weights (0 = the raw weights)."""
    select: str = "pooled_ua"
    """Model selection: ``pooled_ua`` (UA over all validation clips) or ``mean_corpus_ua`` (mean of the
    validation corpora's UAs, each over its own classes). The shipped run first selected on the
    per-corpus mean scored 7-way, where URDU's three validation speakers swung it below chance
    (docs/results.md)."""
    test_groups: tuple[str, ...] = ()
    """Speakers (or folds: ``urbansound8k:fold3``) to test on instead of ``default_holdout``'s choice;
    with ``val_groups``, the whole split (``emostream foldcv``)."""
    val_groups: tuple[str, ...] = ()
    threads: int = 2
    out_dir: str = "runs/default"
    resume: bool = False
    cache_dir: str = ""
    max_clips_per_dataset: int = 0
    """Use at most this many clips of each corpus (0 = all); for quick runs."""
    name: str = ""
    command: str = ""
    windows: WindowConfig = field(default_factory=WindowConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["datasets"] = list(self.datasets)
        d["test_groups"], d["val_groups"] = list(self.test_groups), list(self.val_groups)
        return d
