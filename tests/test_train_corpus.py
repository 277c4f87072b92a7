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
