"""The shipped default model on a small slice of real held-out speakers scores above chance (needs ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emostream.models.modelfile import DEFAULT_MODEL_DIR, load_classifier

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real corpora not found at {DATA}"),
    pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.onnx").is_file(), reason="no shipped default model"),
]


def test_default_model_on_held_out_speakers_beats_chance(tmp_path: Path) -> None:
    import argparse

    from emostream.train.cli import register_evaluate

    parser = argparse.ArgumentParser()
    register_evaluate(parser.add_subparsers())
    report_path = tmp_path / "report.json"
    args = parser.parse_args(
        [
            "evaluate",
            "--model",
            "default",
            "--data",
            str(DATA),
            "--datasets",
            "ravdess,urdu",
            "--speakers",
            "test",
            "--max-clips",
            "60",
            "--report",
            str(report_path),
            "--predictions",
            str(tmp_path / "p.csv"),
            "--cache",
            str(tmp_path / "cache"),
            "--perturb",
            "gain:-12,gain:+12",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(report_path.read_text())
    n_classes = len(load_classifier("default").labels)
    ravdess, urdu = report["datasets"]["ravdess"], report["datasets"]["urdu"]
    assert set(ravdess["speakers"]) <= {"ravdess:17", "ravdess:18", "ravdess:19", "ravdess:20"}
    assert ravdess["n"] == 60 and urdu["n"] == 60
    assert ravdess["ua"] > 1.5 / n_classes  # chance 1/7
    assert urdu["restricted"]["ua"] > 1.5 / 4  # chance 1/4 among URDU's own classes
    # the shipped model normalises the level itself: a gain that does not clip moves UA by at most 2 points
    # (+12 dB clips URDU's loud recordings, about -18 dBFS, and 60 clips with 4 neutral ones are too few to
    # bound that here; the full evaluation in models/default/REPORT.md measures it)
    for condition, corpus in (("gain:-12", "ravdess"), ("gain:-12", "urdu"), ("gain:+12", "ravdess")):
        moved = report["robustness"][condition]["datasets"][corpus]["ua"] - report["datasets"][corpus]["ua"]
        assert abs(moved) <= 0.02, (condition, corpus, moved)
