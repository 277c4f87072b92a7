"""The shared emotion vocabulary, its aliases, and the label sets a model is trained on.

Loaders (`train.corpora`) normalise every corpus's own label to `VOCABULARY`; a `LabelSet` then
says which of those labels a model predicts and which ones are merged into another
(`calm -> neutral`). A clip whose label the set neither contains nor maps is skipped (`None`).
Loaders of other tasks (`train.corpora_tasks`: sound classes, genres) keep the corpus's own class
names; `--labels data` (`DATA_LABELS`) makes them the label set as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

VOCABULARY: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)
"""Every label a loader may emit. `boredom` (EMO-DB) is its own class, never `sad`."""

ALIASES: dict[str, str] = {
    "neu": "neutral",
    "happiness": "happy",
    "hap": "happy",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "ang": "angry",
    "fear": "fearful",
    "fea": "fearful",
    "disgusted": "disgust",
    "dis": "disgust",
    "surprise": "surprised",
    "sur": "surprised",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "bored": "boredom",
}
"""Other spellings of vocabulary labels, keyed by their `_canonical_key` (lower case, `_` for `-`/space)."""


def _canonical_key(name: str) -> str:
    """Lower-case, strip, and join words with `_` so 'Pleasant surprise' == 'pleasant_surprise'."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def normalise_label(name: str) -> str | None:
    """The vocabulary label for `name` (any case, any alias), or None when it names no emotion we know."""
    key = _canonical_key(name)
    if key in VOCABULARY:
        return key
    return ALIASES.get(key)


def _known_names() -> str:
    """The accepted label names, for error messages."""
    return ", ".join(VOCABULARY) + f" (aliases: {', '.join(sorted(ALIASES))})"


def _plain_label(name: str) -> str:
    """A label of another task as given, stripped; ValueError when empty."""
    if not name.strip():
        raise ValueError("empty label")
    return name.strip()


def _require_label(name: str) -> str:
    """`normalise_label`, raising ValueError that lists the known names when `name` is unknown."""
    label = normalise_label(name)
    if label is None:
        raise ValueError(f"unknown label {name!r}; known labels: {_known_names()}")
    return label


@dataclass(frozen=True, slots=True)
class LabelSet:
    """The ordered classes of a model and the vocabulary labels merged into them.

    `labels[i]` is class `i`. `mapping` sends a vocabulary label that is not a class to one that
    is (`{"calm": "neutral"}`); labels neither in `labels` nor in `mapping` are not trained on.
    """

    labels: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict, hash=False)
    open_vocabulary: bool = False
    """Labels of another task, read from the data (sound classes, genres): kept as given (stripped),
    no emotion vocabulary or aliases (``DATA_LABELS``)."""

    def __post_init__(self) -> None:
        check = _plain_label if self.open_vocabulary else _require_label
        labels = tuple(check(name) for name in self.labels)
        if not labels:
            raise ValueError("a label set needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {list(self.labels)}")
        mapping = {check(src): check(dst) for src, dst in self.mapping.items()}
        mapping = {src: dst for src, dst in mapping.items() if src != dst}
        for src, dst in mapping.items():
            if dst not in labels:
                raise ValueError(f"mapping {src}->{dst}: {dst!r} is not one of the labels {list(labels)}")
            if src in labels:
                raise ValueError(f"mapping {src}->{dst}: {src!r} is itself a label; drop one of them")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "mapping", mapping)

    @property
    def n_classes(self) -> int:
        """How many classes the model predicts."""
        return len(self.labels)

    def map_label(self, label: str) -> str | None:
        """The class for a clip labelled `label`, or None when this set does not train on it."""
        name = label.strip() if self.open_vocabulary else normalise_label(label)
        if name is None:
            return None
        name = self.mapping.get(name, name)
        return name if name in self.labels else None

    def class_index(self, label: str) -> int | None:
        """The class index for a clip labelled `label`, or None when this set does not train on it."""
        name = self.map_label(label)
        return None if name is None else self.labels.index(name)


def fold_plan(label_set: LabelSet, present: Iterable[str]) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Train each merged label that occurs in the data (``present``) as a class of its own, merged at inference.

    Returns the head's labels (the set's labels, then the merged ones, in mapping order) and, per class of
    the set, the head classes whose probabilities sum into it (``ModelConfig.fold``). With nothing to
    merge, the head is the set itself and the fold is empty.
    """
    seen = {normalise_label(name) or name for name in present}
    extra = tuple(src for src in label_set.mapping if src in seen)
    if not extra:
        return label_set.labels, ()
    head = label_set.labels + extra
    groups = tuple(
        (j, *(head.index(src) for src in extra if label_set.mapping[src] == name))
        for j, name in enumerate(label_set.labels)
    )
    return head, groups


def parse_labels(text: str) -> tuple[str, ...]:
    """Labels from a comma-separated user string, e.g. "neutral,happy,sad"; ValueError on unknown names."""
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise ValueError(f"no labels in {text!r}; known labels: {_known_names()}")
    return tuple(_require_label(name) for name in names)


def parse_map(text: str) -> dict[str, str]:
    """A label mapping from a user string, e.g. "calm=neutral,ps=surprised"; "" gives {}."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, sep, dst = part.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"bad mapping {part!r} in {text!r}: expected 'from=to'")
        mapping[_require_label(src)] = _require_label(dst)
    return mapping


PRESETS: dict[str, LabelSet] = {
    "7class": LabelSet(
        ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"), {"calm": "neutral"}
    ),
    "8class": LabelSet(("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")),
    "4class": LabelSet(("neutral", "happy", "sad", "angry"), {"calm": "neutral"}),
}
"""Named label sets. `boredom` is in none of them (EMO-DB boredom clips are skipped, not called sad)."""


DATA_LABELS = "data"
"""``--labels data``: the label set is every label the training corpora hold (sorted), for tasks other
than speech emotion (UrbanSound8K's classes, GTZAN's genres)."""


def resolve_label_set(labels: str, mapping: str = "", present: Iterable[str] | None = None) -> LabelSet:
    """A preset name or comma-separated labels, plus an optional extra "from=to,..." mapping.

    ``DATA_LABELS`` takes the labels from ``present`` (the corpora's clip labels) and any names at all.
    """
    if labels.strip().lower() == DATA_LABELS:
        if present is None:
            raise ValueError(f"--labels {DATA_LABELS} needs the corpora's labels")
        pairs = [part.partition("=") for part in (p.strip() for p in mapping.split(",")) if part]
        if any(not sep or not src.strip() or not dst.strip() for src, sep, dst in pairs):
            raise ValueError(f"bad mapping in {mapping!r}: expected 'from=to,...'")
        merged = {src.strip(): dst.strip() for src, _, dst in pairs}
        found = sorted({name.strip() for name in present} - set(merged))
        if len(found) < 2:
            raise ValueError(f"the corpora hold {len(found)} label(s) ({', '.join(found)}); a model needs two or more")
        return LabelSet(tuple(found), merged, open_vocabulary=True)
    preset = PRESETS.get(labels.strip().lower())
    if preset is not None:
        return LabelSet(preset.labels, {**preset.mapping, **parse_map(mapping)})
    try:
        names = parse_labels(labels)
    except ValueError as err:
        raise ValueError(f"{err}; or a preset: {', '.join(PRESETS)}") from None
    return LabelSet(names, parse_map(mapping))
