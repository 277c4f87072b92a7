"""`emostream foldcv`: UrbanSound8K's official protocol, test on fold k, select on fold k-1, train on the rest.

The synthetic UrbanSound8K tree (tests/sounds.py) has three sound classes in the ten official folds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from sounds import write_us8k

from emostream.train.foldcv import corpus_folds, plan, register_foldcv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"channels": [8, 16], "band_dim": 32, "lstm_hidden": 16}
FEATURES = {"window_s": 2.0, "n_mels": 32, "f_max_hz": 7000.0}


def test_folds_come_from_the_groups_and_validation_is_the_previous_fold() -> None:
    folds = corpus_folds({f"urbansound8k:fold{k}" for k in range(1, 11)})
    assert list(folds) == list(range(1, 11))
    assert plan(folds, [1, 4]) == [
        (1, "urbansound8k:fold1", "urbansound8k:fold10"),
        (4, "urbansound8k:fold4", "urbansound8k:fold3"),
    ]
    assert len(plan(folds, [])) == 10
    with pytest.raises(ValueError, match="no fold"):
        plan(folds, [11])
    with pytest.raises(ValueError, match="predefined folds"):  # speakers are not folds
        corpus_folds({"ravdess:01", "ravdess:02", "ravdess:03"})


def test_foldcv_cli_runs_each_fold_on_its_own_split(tmp_path: Path) -> None:
    data = write_us8k(tmp_path / "UrbanSound8K")
    out = tmp_path / "cv"
    parser = argparse.ArgumentParser(prog="emostream")
    register_foldcv(parser.add_subparsers())
    args = parser.parse_args(
        [
            "foldcv",
            "--data",
            str(data),
            "--folds",
            "1,4",
            "--model-settings",
            json.dumps(TINY),
            "--feature-settings",
            json.dumps(FEATURES),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert args.func(args) == 0
    study = json.loads((out / "foldcv.json").read_text())
    assert list(study["runs"]) == ["fold1", "fold4"]
    for k, val in ((1, 10), (4, 3)):
        split = json.loads((out / f"fold{k}" / "report.json").read_text())["train"]["split"]
        assert split["test"] == [f"urbansound8k:fold{k}"]
        assert split["val"] == [f"urbansound8k:fold{val}"]
        assert f"urbansound8k:fold{k}" not in split["train"] and len(split["train"]) == 8
        assert study["runs"][f"fold{k}"]["overall"]["n"] == 6  # 3 classes x 2 clips of the test fold
    accuracy = [run["overall"]["wa"] for run in study["runs"].values()]
    assert study["summary"]["wa"]["mean"] == pytest.approx(sum(accuracy) / 2)
    assert "mean +- sd over 2 folds" in (out / "foldcv.md").read_text()


def test_foldcv_refuses_a_corpus_without_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sounds import write_gtzan

    data = write_gtzan(tmp_path / "gtzan")
    parser = argparse.ArgumentParser(prog="emostream")
    register_foldcv(parser.add_subparsers())
    args = parser.parse_args(["foldcv", "--data", str(data), "--out", str(tmp_path / "cv")])
    assert args.func(args) == 2
    assert "predefined folds" in capsys.readouterr().err
