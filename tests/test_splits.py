"""Tests of the speaker-independent splits: no speaker in two parts, every clip placed once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from emostream.train.corpora import Clip
from emostream.train.splits import (
    Split,
    check_speaker_disjoint,
    choose_holdout_speakers,
    default_holdout,
    holdout,
    speaker_kfold,
    speakers_of,
)

LABELS = ("neutral", "happy", "sad", "angry")


def make_clips(assignments: list[tuple[int, int, int]]) -> list[Clip]:
    """Clips from (corpus, speaker, label) indices; speaker ids are corpus-prefixed like the loaders'."""
    return [
        Clip(Path(f"c{corpus}/{i}.wav"), LABELS[label], f"c{corpus}:s{speaker}", f"c{corpus}")
        for i, (corpus, speaker, label) in enumerate(assignments)
    ]


def corpus_clips(corpus: str, clips_per_speaker: dict[str, int]) -> list[Clip]:
    """`n` clips per named speaker of one corpus, labels cycling through `LABELS`."""
    return [
        Clip(Path(f"{corpus}/{speaker}_{i}.wav"), LABELS[i % len(LABELS)], f"{corpus}:{speaker}", corpus)
        for speaker, n in clips_per_speaker.items()
        for i in range(n)
    ]


assignments = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 12), st.integers(0, len(LABELS) - 1)),
    min_size=1,
    max_size=120,
)


def assert_partition(clips: list[Clip], parts: list[list[int]]) -> None:
    """Every clip index is in exactly one part, and no speaker is in two parts."""
    assert sorted(i for part in parts for i in part) == list(range(len(clips)))
    for a, part_a in enumerate(parts):
        for part_b in parts[a + 1 :]:
            assert speakers_of(clips, part_a).isdisjoint(speakers_of(clips, part_b))


@settings(max_examples=60, deadline=None, database=None)
@given(assignments, st.integers(2, 6), st.integers(0, 3))
def test_kfold_tests_every_clip_once_and_never_shares_a_speaker(
    assignment: list[tuple[int, int, int]], k: int, seed: int
) -> None:
    clips = make_clips(assignment)
    n_speakers = len({clip.speaker for clip in clips})
    if k > n_speakers:
        with pytest.raises(ValueError, match="number of speakers"):
            speaker_kfold(clips, k, seed)
        return
    folds = speaker_kfold(clips, k, seed)
    assert len(folds) == k
    assert_partition(clips, [test for _, test in folds])
    for train, test in folds:
        assert_partition(clips, [train, test])
    assert speaker_kfold(clips, k, seed) == folds


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.integers(1, 30), min_size=2, max_size=25), st.integers(2, 5))
def test_kfold_balances_clip_counts(sizes: list[int], k: int) -> None:
    clips = corpus_clips("one", {f"s{i}": n for i, n in enumerate(sizes)})
    assume(k <= len(sizes))
    fold_sizes = [len(test) for _, test in speaker_kfold(clips, k, seed=0)]
    assert max(fold_sizes) - min(fold_sizes) <= max(sizes)


def test_kfold_spreads_each_corpus_over_folds() -> None:
    clips = corpus_clips("a", {f"s{i}": 10 for i in range(6)}) + corpus_clips(
        "b", {f"t{i}": 4 for i in range(3)}
    )
    folds = speaker_kfold(clips, 3, seed=1)
    per_fold = [Counter(clips[i].corpus for i in test) for _, test in folds]
    assert per_fold == [Counter(a=20, b=4)] * 3


@settings(max_examples=60, deadline=None, database=None)
@given(assignments, st.integers(0, 3))
def test_default_holdout_is_a_speaker_partition(assignment: list[tuple[int, int, int]], seed: int) -> None:
    clips = make_clips(assignment)
    split = default_holdout(clips, seed)
    assert_partition(clips, [split.train, split.val, split.test])
    assert default_holdout(clips, seed) == split
    assert split.train, "every corpus keeps at least one training speaker"


@settings(max_examples=60, deadline=None, database=None)
@given(assignments, st.data())
def test_holdout_keeps_named_speakers_out_of_train(
    assignment: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    clips = make_clips(assignment)
    speakers = sorted({clip.speaker for clip in clips})
    chosen = data.draw(st.lists(st.sampled_from(speakers), unique=True))
    cut = data.draw(st.integers(0, len(chosen)))
    test, val = set(chosen[:cut]), set(chosen[cut:])
    split = holdout(clips, test, val)
    assert_partition(clips, [split.train, split.val, split.test])
    assert (speakers_of(clips, split.test), speakers_of(clips, split.val)) == (test, val)


def test_holdout_rejects_overlap_and_unknown_speakers() -> None:
    clips = corpus_clips("x", {"a": 2, "b": 2, "c": 2})
    with pytest.raises(ValueError, match="both test and validation"):
        holdout(clips, {"x:a"}, {"x:a", "x:b"})
    with pytest.raises(ValueError, match="no clips"):
        holdout(clips, {"x:z"}, set())


def test_check_speaker_disjoint_raises() -> None:
    clips = corpus_clips("x", {"a": 2, "b": 2})
    check_speaker_disjoint(clips, {"train": [0, 1], "test": [2, 3]})
    with pytest.raises(ValueError, match="speaker x:a is in both train and test"):
        check_speaker_disjoint(clips, {"train": [0, 2], "test": [1, 3]})


def held_out(clips: list[Clip], seed: int = 0) -> tuple[list[str], list[str]]:
    """The sorted (test, val) speakers default_holdout picks."""
    test, val = choose_holdout_speakers(clips, seed)
    return sorted(test), sorted(val)


def test_default_holdout_ravdess_and_tess() -> None:
    ravdess = corpus_clips("ravdess", {f"{actor:02d}": 60 for actor in range(1, 21)})
    tess = corpus_clips("tess", {"OAF": 700, "YAF": 700})
    assert held_out(ravdess + tess) == (
        ["ravdess:17", "ravdess:18", "ravdess:19", "ravdess:20", "tess:OAF"],
        ["ravdess:15", "ravdess:16"],
    )
    split = default_holdout(ravdess + tess)
    assert (len(split.train), len(split.val), len(split.test)) == (840 + 700, 120, 240 + 700)


def test_default_holdout_counts_per_corpus_size() -> None:
    nemo = corpus_clips("nemo", {f"S{i}": 40 for i in range(9)})
    urdu = corpus_clips("urdu", {f"SM{i}": 2 + i for i in range(29)})
    test, val = choose_holdout_speakers(nemo + urdu, seed=3)
    counts = Counter(
        (speaker.split(":")[0], part) for part, ids in (("test", test), ("val", val)) for speaker in ids
    )
    assert counts == Counter(
        {("nemo", "test"): 2, ("nemo", "val"): 1, ("urdu", "test"): 6, ("urdu", "val"): 3}
    )


@pytest.mark.parametrize(
    ("clips_per_speaker", "n_test", "n_val"),
    [
        ({"solo": 5}, 0, 0),
        ({"a": 5, "b": 5}, 1, 0),
        ({"a": 5, "b": 5, "c": 5}, 1, 1),
        ({"s1": 1, "s2": 1, "s3": 1, "s4": 1}, 1, 1),
    ],
)
def test_default_holdout_small_corpora(clips_per_speaker: dict[str, int], n_test: int, n_val: int) -> None:
    clips = corpus_clips("small", clips_per_speaker)
    split = default_holdout(clips)
    assert (len(speakers_of(clips, split.test)), len(speakers_of(clips, split.val))) == (n_test, n_val)
    assert len(speakers_of(clips, split.train)) == len(clips_per_speaker) - n_test - n_val


def test_default_holdout_prefers_every_emotion_in_test() -> None:
    # Like URDU: each speaker acts one emotion; a draw missing an emotion in test scores worse.
    clips = [
        Clip(Path(f"u/{label}{s}.wav"), label, f"urdu:{label}{s}", "urdu")
        for label in LABELS
        for s in range(5)
    ]
    test, _ = choose_holdout_speakers(clips, seed=0)
    assert {speaker.split(":")[1].rstrip("0123456789") for speaker in test} == set(LABELS)


def test_split_is_frozen() -> None:
    split = Split(train=[0], val=[], test=[1])
    with pytest.raises(AttributeError):
        split.train = [1]  # type: ignore[misc]
