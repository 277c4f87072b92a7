"""Speaker-independent splits of a clip list: k-fold by speaker and train/val/test hold-outs.

Every split groups clips by `Clip.speaker` (corpus-prefixed, so unique across corpora); no
function here ever splits one speaker's clips, and each result is checked (ValueError) so a
speaker never lands in two parts. Indices refer to the `clips` list passed in.

`default_holdout` picks, per corpus, deterministically:
- ravdess: test actors 17-20, validation actors 15-16 (odd = male, so both genders in each);
- tess: test OAF, no validation speaker (it has only OAF and YAF);
- urbansound8k: test fold 10, validation fold 9 (its groups are the official folds; the full
  protocol, 10-fold cross-validation over them and never a random split, is `emostream foldcv`);
  these three only when all the named speakers are present and another is left to train,
  otherwise the rules below apply;
- a corpus with one speaker: all of it trains (nothing to hold out);
- a corpus with two speakers: one (seeded) tests, none validates;
- any other: a seeded choice of `round(20 %)` of its speakers for test and `round(10 %)` for
  validation, at least one each (nEMO's 9 speakers: 2 test, 1 val; URDU's 29: 6 test, 3 val):
  the best of `N_DRAWS` seeded draws, preferring a test part with every emotion of the corpus,
  then parts holding at most `MAX_HELD_OUT_CLIP_SHARE` of its clips and of each emotion's clips,
  then a val part with every emotion (URDU's speakers each act mostly one emotion and a few
  hold most of its clips: only 4 speakers act anger, one of them 48 of the 100 clips).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from emostream.train.corpora import Clip

TEST_SPEAKER_FRACTION = 0.2
VAL_SPEAKER_FRACTION = 0.1
MAX_HELD_OUT_CLIP_SHARE = 0.35
"""Draws whose test or val part holds more than this share of a corpus's clips, or of one of its
emotions' clips, score worse."""
N_DRAWS = 100
"""Seeded draws of held-out speakers per corpus; the best one (`_draw_score`) is kept."""

FIXED_HOLDOUT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ravdess": (("17", "18", "19", "20"), ("15", "16")),
    "tess": (("OAF",), ()),
    "urbansound8k": (("fold10",), ("fold9",)),
}
"""Per corpus, (test, val) speaker ids without the corpus prefix; used when all of them are present."""


@dataclass(frozen=True, slots=True)
class Split:
    """Clip indices of a train / validation / test split (sorted, disjoint by speaker)."""

    train: list[int]
    val: list[int]
    test: list[int]


Fold = tuple[list[int], list[int]]
"""(train indices, test indices) of one cross-validation fold."""


def speakers_of(clips: Sequence[Clip], indices: Collection[int]) -> set[str]:
    """The speakers of the clips at `indices`."""
    return {clips[i].speaker for i in indices}


def check_speaker_disjoint(clips: Sequence[Clip], parts: Mapping[str, Collection[int]]) -> None:
    """Raise ValueError when a speaker (or a clip) appears in two of the named parts."""
    seen: dict[str, str] = {}
    seen_clips: set[int] = set()
    for part, indices in parts.items():
        if seen_clips & set(indices):
            raise ValueError(f"clips in two parts, {part} and an earlier one")
        seen_clips |= set(indices)
        for speaker in sorted(speakers_of(clips, indices)):
            if seen.setdefault(speaker, part) != part:
                raise ValueError(f"speaker {speaker} is in both {seen[speaker]} and {part}")


def _clips_by_speaker(clips: Sequence[Clip]) -> dict[str, list[int]]:
    """Clip indices per speaker, speakers in first-seen order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(clips):
        groups[clip.speaker].append(index)
    return dict(groups)


def _corpus_of_speaker(clips: Sequence[Clip]) -> dict[str, str]:
    """Each speaker's corpus (speakers are corpus-prefixed, so each has one)."""
    return {clip.speaker: clip.corpus for clip in clips}


def speaker_kfold(clips: Sequence[Clip], k: int, seed: int = 0) -> list[Fold]:
    """`k` folds grouped by speaker; every clip is in exactly one fold's test part.

    Speakers are shuffled (seeded), then placed largest first, each into the fold that holds the
    fewest clips of its corpus (ties: fewest clips overall, then lowest fold), so folds are
    balanced by clip count and every corpus with >= k speakers reaches every fold.
    """
    groups = _clips_by_speaker(clips)
    if not 2 <= k <= len(groups):
        raise ValueError(f"k={k} folds need 2 <= k <= number of speakers ({len(groups)})")
    corpus_of = _corpus_of_speaker(clips)
    speakers = sorted(groups)
    random.Random(seed).shuffle(speakers)
    speakers.sort(key=lambda speaker: -len(groups[speaker]))
    per_corpus: Counter[tuple[str, int]] = Counter()
    totals = [0] * k
    tests: list[list[int]] = [[] for _ in range(k)]
    for speaker in speakers:
        corpus = corpus_of[speaker]
        fold = min(range(k), key=lambda f: (per_corpus[corpus, f], totals[f], f))
        tests[fold].extend(groups[speaker])
        per_corpus[corpus, fold] += len(groups[speaker])
        totals[fold] += len(groups[speaker])
    folds = [(sorted(set(range(len(clips))) - set(test)), sorted(test)) for test in tests]
    for train, test in folds:
        check_speaker_disjoint(clips, {"train": train, "test": test})
    return folds


def holdout(clips: Sequence[Clip], test_speakers: set[str], val_speakers: set[str]) -> Split:
    """Test and validation parts made of the named speakers' clips; every other clip trains.

    ValueError when a speaker is named for both parts or names no clip (a typo would otherwise
    silently hold nothing out).
    """
    both = set(test_speakers) & set(val_speakers)
    if both:
        raise ValueError(f"speakers named for both test and validation: {sorted(both)}")
    unknown = (set(test_speakers) | set(val_speakers)) - {clip.speaker for clip in clips}
    if unknown:
        raise ValueError(f"speakers with no clips: {sorted(unknown)}")
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for index, clip in enumerate(clips):
        part = "test" if clip.speaker in test_speakers else "val" if clip.speaker in val_speakers else "train"
        parts[part].append(index)
    check_speaker_disjoint(clips, parts)
    return Split(train=parts["train"], val=parts["val"], test=parts["test"])


def _fixed_choice(
    corpus: str, speakers: Collection[str], test: Sequence[str], val: Sequence[str]
) -> tuple[set[str], set[str]] | None:
    """(test, val) speaker sets from fixed ids (without corpus prefix); None if one is absent."""
    test_ids = {f"{corpus}:{speaker}" for speaker in test}
    val_ids = {f"{corpus}:{speaker}" for speaker in val}
    if not (test_ids | val_ids) <= set(speakers) or not set(speakers) - test_ids - val_ids:
        return None
    return test_ids, val_ids


def _held_out_counts(n_speakers: int) -> tuple[int, int]:
    """(test, val) speaker counts for a corpus of `n_speakers`."""
    if n_speakers <= 1:
        return 0, 0
    if n_speakers == 2:
        return 1, 0
    n_test = max(1, round(TEST_SPEAKER_FRACTION * n_speakers))
    n_val = max(1, round(VAL_SPEAKER_FRACTION * n_speakers))
    return n_test, min(n_val, n_speakers - n_test - 1)


def _held_out_share(labels: dict[str, Counter[str]], part: set[str]) -> float:
    """The largest share of one emotion's clips (or of all clips) that the speakers in `part` hold."""
    held = Counter[str]()
    total = Counter[str]()
    for speaker, counts in labels.items():
        total.update(counts)
        if speaker in part:
            held.update(counts)
    shares = [held[label] / total[label] for label in total]
    return max([*shares, held.total() / total.total()])


def _draw_score(labels: dict[str, Counter[str]], test: set[str], val: set[str]) -> tuple[int, float, int]:
    """Lower is better: emotions missing from test, held-out share over the cap, emotions missing from val."""
    corpus_labels = set().union(*labels.values())
    share = max(_held_out_share(labels, test), _held_out_share(labels, val))
    missing_test = len(corpus_labels - set().union(*(labels[s] for s in test)))
    missing_val = len(corpus_labels - set().union(*(labels[s] for s in val))) if val else 0
    return missing_test, max(0.0, share - MAX_HELD_OUT_CLIP_SHARE), missing_val


def _fraction_choice(labels: dict[str, Counter[str]], rng: random.Random) -> tuple[set[str], set[str]]:
    """Seeded (test, val) speakers by `_held_out_counts`: the best of `N_DRAWS` draws by `_draw_score`."""
    n_test, n_val = _held_out_counts(len(labels))
    speakers = sorted(labels)
    best: tuple[tuple[int, float, int], set[str], set[str]] | None = None
    for _ in range(N_DRAWS):
        order = rng.sample(speakers, len(speakers))
        test, val = set(order[:n_test]), set(order[n_test : n_test + n_val])
        score = _draw_score(labels, test, val)
        if best is None or score < best[0]:
            best = (score, test, val)
    assert best is not None
    return best[1], best[2]


def _corpus_choice(corpus: str, labels: dict[str, Counter[str]], seed: int) -> tuple[set[str], set[str]]:
    """One corpus's (test, val) speakers: its fixed choice when it has one, else the seeded rule."""
    fixed = FIXED_HOLDOUT.get(corpus)
    choice = None if fixed is None else _fixed_choice(corpus, labels, *fixed)
    if choice is not None:
        return choice
    return _fraction_choice(labels, random.Random(f"{seed}:{corpus}"))


def choose_holdout_speakers(clips: Sequence[Clip], seed: int = 0) -> tuple[set[str], set[str]]:
    """The (test, validation) speakers `default_holdout` uses, chosen per corpus (module docstring)."""
    labels_by_corpus: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for clip in clips:
        labels_by_corpus[clip.corpus][clip.speaker][clip.label] += 1
    test: set[str] = set()
    val: set[str] = set()
    for corpus in sorted(labels_by_corpus):
        corpus_test, corpus_val = _corpus_choice(corpus, labels_by_corpus[corpus], seed)
        test |= corpus_test
        val |= corpus_val
    return test, val


def default_holdout(clips: Sequence[Clip], seed: int = 0) -> Split:
    """A deterministic speaker-independent train/val/test split, chosen per corpus (module docstring)."""
    test, val = choose_holdout_speakers(clips, seed)
    return holdout(clips, test, val)
