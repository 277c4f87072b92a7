"""train.metrics equals hand-computed WA, UA, macro-F1 and per-class scores on small confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.train.metrics import compute_metrics, confusion_matrix, metrics_from_confusion


def test_confusion_matrix_counts_rows_truth_columns_prediction() -> None:
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_three_class_example_by_hand() -> None:
    # truth a: 3 clips (2 right, 1 -> b); b: 1 clip (right); c: 4 clips (1 -> a, 3 right)
    cm = np.array([[2, 1, 0], [0, 1, 0], [1, 0, 3]])
    m = metrics_from_confusion(cm, ("a", "b", "c"))
    assert m.n == 8
    assert m.wa == pytest.approx(6 / 8)
    recall = [2 / 3, 1.0, 3 / 4]
    precision = [2 / 3, 1 / 2, 1.0]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    assert m.ua == pytest.approx(np.mean(recall))
    assert m.macro_f1 == pytest.approx(np.mean(f1))
    for i, name in enumerate("abc"):
        assert m.per_class[name].recall == pytest.approx(recall[i])
        assert m.per_class[name].precision == pytest.approx(precision[i])
        assert m.per_class[name].f1 == pytest.approx(f1[i])
    assert [m.per_class[n].support for n in "abc"] == [3, 1, 4]


def test_ua_differs_from_wa_on_imbalanced_data() -> None:
    # 9 of class a all right, 1 of class b wrong: WA 0.9 but UA 0.5
    m = compute_metrics([0] * 9 + [1], [0] * 10, ("a", "b"))
    assert m.wa == pytest.approx(0.9)
    assert m.ua == pytest.approx(0.5)
    assert m.per_class["b"].f1 == 0.0
    assert m.per_class["a"].precision == pytest.approx(0.9)
    assert m.macro_f1 == pytest.approx((2 * 0.9 * 1.0 / 1.9 + 0.0) / 2)


def test_classes_absent_from_truth_are_left_out_of_ua_but_predictions_into_them_are_errors() -> None:
    # a 3-class model on a data set with only classes a and b; one b clip predicted as c
    cm = np.array([[2, 0, 0], [0, 1, 1], [0, 0, 0]])
    m = metrics_from_confusion(cm, ("a", "b", "c"))
    assert m.ua == pytest.approx((1.0 + 0.5) / 2)
    assert m.wa == pytest.approx(3 / 4)
    assert m.macro_f1 == pytest.approx((1.0 + 2 * 1.0 * 0.5 / 1.5) / 2)
    assert m.per_class["c"].support == 0


def test_perfect_and_empty() -> None:
    m = compute_metrics([0, 1, 2], [0, 1, 2], ("x", "y", "z"))
    assert (m.wa, m.ua, m.macro_f1) == (1.0, 1.0, 1.0)
    e = compute_metrics([], [], ("x", "y"))
    assert (e.n, e.wa, e.ua) == (0, 0.0, 0.0)


def test_to_dict_is_json_ready() -> None:
    d = compute_metrics([0, 1], [1, 1], ("x", "y")).to_dict()
    assert set(d) >= {"ua", "wa", "macro_f1", "n", "labels", "confusion", "per_class"}
    assert d["confusion"] == [[0, 1], [0, 1]]
    assert d["labels"] == ["x", "y"]


def test_bad_indices_raise() -> None:
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_changed_predictions_and_the_step_of_one_clip() -> None:
    """The robustness report's counts: clips whose predicted class a condition changed, per corpus and
    overall, and the most one clip's prediction can move a corpus's UA (one clip of its rarest class)."""
    from pathlib import Path

    from emostream.train.corpora import Clip
    from emostream.train.evaluate import changed_predictions, one_clip_ua, score

    clips = [Clip(Path(f"{i}.wav"), "happy", "s", "ravdess" if i < 4 else "urdu") for i in range(7)]
    clean = np.array([0, 1, 2, 3, 0, 0, 1])
    after = np.array([0, 2, 2, 1, 0, 3, 1])
    assert changed_predictions(clips, after, clean) == {"ravdess": 2, "urdu": 1, "overall": 3}
    assert changed_predictions(clips, clean, clean) == {"ravdess": 0, "urdu": 0, "overall": 0}
    # 4 classes, the rarest with 1 clip: that clip is its class's whole recall, a quarter of the mean;
    # 2 classes of 3 and 6 clips: 1 / (2 x 3)
    assert one_clip_ua(np.array([0, 0, 1, 1, 2, 3, 3])) == pytest.approx(0.25)
    assert one_clip_ua(np.array([0] * 3 + [2] * 6)) == pytest.approx(1 / 6)
    assert one_clip_ua(np.zeros(0, np.int64)) == 0.0
    # the step is exact: moving one clip of the rarest class moves UA by it
    targets = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    probs = np.eye(2)[targets].astype(np.float32)
    flipped = probs.copy()
    flipped[0] = [0.0, 1.0]
    clips2 = [Clip(Path(f"{i}.wav"), "x", "s", "urdu") for i in range(9)]
    base, moved = score(clips2, targets, probs, ["a", "b"]), score(clips2, targets, flipped, ["a", "b"])
    step = base["datasets"]["urdu"]["one_clip_ua"]
    assert base["datasets"]["urdu"]["ua"] - moved["datasets"]["urdu"]["ua"] == pytest.approx(step)


def test_ua_per_speaker_over_each_speakers_own_classes() -> None:
    """The report's ``per_speaker``: UA over the speaker's own classes, so a speaker holding one emotion
    (URDU's test speakers) scores its accuracy on it, and the corpus's pooled UA is not their mean."""
    from pathlib import Path

    from emostream.train.corpora import Clip
    from emostream.train.evaluate import score
    from emostream.train.report import markdown_report, speaker_rows

    speakers = ["a"] * 4 + ["b"] * 2 + ["c"] * 4
    clips = [Clip(Path(f"{i}.wav"), "x", f"urdu:{s}", "urdu") for i, s in enumerate(speakers)]
    targets = np.array([0, 0, 1, 1, 2, 2, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 2, 0, 0, 0, 0, 1])
    report = score(clips, targets, np.eye(3)[preds], ["neutral", "happy", "sad"])
    got = report["datasets"]["urdu"]["per_speaker"]
    assert got == {
        "urdu:a": {"n": 4, "classes": 2, "ua": pytest.approx((1 / 2 + 2 / 2) / 2)},
        "urdu:b": {"n": 2, "classes": 1, "ua": pytest.approx(1 / 2)},  # one emotion: its accuracy
        "urdu:c": {"n": 4, "classes": 2, "ua": pytest.approx((1 + 1 / 3) / 2)},
    }
    pooled = (2 / 3 + 3 / 5 + 1 / 2) / 3  # per class over every speaker's clips
    assert report["datasets"]["urdu"]["ua"] == pytest.approx(pooled)
    assert pooled != pytest.approx(np.mean([s["ua"] for s in got.values()]))
    assert speaker_rows(report)[1] == ["urdu", "urdu:b", "2", "1", "50.0"]
    report.update(model={"name": "m", "arch": "clip_stats", "backend": "eager"})
    assert "| urdu | urdu:c | 4 | 2 | 66.7 |" in markdown_report(report)
