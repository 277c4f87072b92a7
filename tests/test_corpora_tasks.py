"""UrbanSound8K and GTZAN loaders, their splits (official folds, never random) and label sets read from the data."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import pytest
from sounds import GENRES, US8K_CLASSES, write_gtzan, write_us8k

from emostream.train.cli import default_labels, resolve_datasets
from emostream.train.corpora import MISSING_FILE, corpus_root, detect_corpus, load_corpora, load_corpus
from emostream.train.corpora_tasks import is_speech_corpus
from emostream.train.labels import DATA_LABELS, LabelSet, resolve_label_set
from emostream.train.splits import default_holdout


@pytest.fixture(scope="module")
def us8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_us8k(tmp_path_factory.mktemp("data") / "UrbanSound8K")


def test_us8k_clips_are_grouped_by_official_fold(us8k: Path) -> None:
    clips, report = load_corpus("urbansound8k", us8k)
    assert report.n_clips == len(clips) == 10 * 3 * 2 and report.n_skipped == 0
    assert {c.label for c in clips} == set(US8K_CLASSES)
    assert {c.speaker for c in clips} == {f"urbansound8k:fold{k}" for k in range(1, 11)}
    for clip in clips:  # the group is the folder the file lies in, as the metadata says
        assert clip.speaker.endswith(clip.path.parent.name)
    split = default_holdout(clips)
    assert {clips[i].speaker for i in split.test} == {"urbansound8k:fold10"}
    assert {clips[i].speaker for i in split.val} == {"urbansound8k:fold9"}
    assert len(split.train) == 8 * 3 * 2


def test_us8k_missing_files_and_columns_are_reported(tmp_path: Path, us8k: Path) -> None:
    root = tmp_path / "us8k"
    shutil.copytree(us8k, root)
    (root / "audio" / "fold3" / "3000-0-0-0.wav").unlink()
    clips, report = load_corpus("urbansound8k", root)
    assert len(clips) == 59 and report.skipped == {MISSING_FILE: 1}
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = list(csv.reader(meta.open()))
    with meta.open("w", newline="") as handle:
        csv.writer(handle).writerows([[c for i, c in enumerate(r) if i != 5] for r in rows])  # drop "fold"
    with pytest.raises(ValueError, match=r"missing column\(s\) \['fold'\]"):
        load_corpus("urbansound8k", root)


def test_us8k_found_from_its_own_folder_or_a_parent(us8k: Path) -> None:
    assert detect_corpus(us8k) == "urbansound8k"
    assert corpus_root(us8k, "urbansound8k") == us8k  # --data names the corpus itself
    assert corpus_root(us8k.parent, "urbansound8k") == us8k  # a data folder holding UrbanSound8K/
    assert resolve_datasets(us8k, None) == ("urbansound8k",)
    assert resolve_datasets(us8k, "ravdess") == ("ravdess",)
    clips, reports = load_corpora(us8k, ["urbansound8k"])
    assert len(clips) == 60 and list(reports) == ["urbansound8k"]


def test_gtzan_genres_from_folders(tmp_path: Path) -> None:
    root = write_gtzan(tmp_path / "genres")
    (root / "blues" / "jazz.00009.wav").write_bytes((root / "jazz" / "jazz.00000.wav").read_bytes())
    assert detect_corpus(root) == "gtzan"
    clips, report = load_corpus("gtzan", root)
    assert len(clips) == 3 * 4 and report.skipped == {"unparseable name": 1}  # a genre contradicting its folder
    assert {c.label for c in clips} == set(GENRES)
    assert len({c.speaker for c in clips}) == len(clips)  # no artists known: each clip its own group
    assert any("each clip is its own group" in note for note in report.notes)
    split = default_holdout(clips)
    assert not {clips[i].speaker for i in split.test} & {clips[i].speaker for i in split.train}


def test_label_set_from_the_data() -> None:
    present = ["siren", "dog_bark", "siren", "engine_idling", "children_playing"]
    ls = resolve_label_set(DATA_LABELS, "children_playing=dog_bark", present)
    assert ls.labels == ("dog_bark", "engine_idling", "siren") and ls.open_vocabulary
    assert ls.class_index("children_playing") == 0 and ls.class_index("siren") == 2
    assert ls.class_index("neutral") is None
    with pytest.raises(ValueError, match="needs the corpora's labels"):
        resolve_label_set(DATA_LABELS)
    with pytest.raises(ValueError, match="a model needs two or more"):
        resolve_label_set(DATA_LABELS, "", ["siren", "siren"])
    with pytest.raises(ValueError, match="unknown label 'siren'"):
        LabelSet(("siren", "neutral"))  # the emotion sets stay closed: a typo is still an error
    assert default_labels(("urbansound8k",)) == DATA_LABELS and default_labels(("ravdess", "tess")) == "7class"
    assert not is_speech_corpus("gtzan") and is_speech_corpus("ravdess")


@pytest.mark.parametrize("model", ["baseline", "deep"])
def test_window_study_changes_only_the_window(us8k: Path, tmp_path: Path, model: str) -> None:
    import argparse
    import json

    from emostream.models.modelfile import load_checkpoint
    from emostream.train.windowstudy import register_windowstudy

    parser = argparse.ArgumentParser(prog="emostream")
    register_windowstudy(parser.add_subparsers())
    out = tmp_path / "study"
    args = parser.parse_args([
        "windowstudy", "--data", str(us8k), "--model", model, "--arch", "resnet", "--model-settings",
        '{"layers": [1, 1, 1, 1], "base_channels": 4}', "--feature-settings", '{"window_s": 2.0, "n_mels": 32}',
        "--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-augment", "--out", str(out),
        "--cache", str(tmp_path / "cache"), *(["--windows", "hann,rectangular"] if model == "baseline" else []),
    ])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        assert args.func(args) == 0
    study = json.loads((out / "windowstudy.json").read_text())
    windows = ["hann", "rectangular"] if model == "baseline" else ["hann", "hamming", "rectangular"]
    assert list(study["runs"]) == windows and study["model"] == model
    table = (out / "windowstudy.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in table[2:]] == windows
    for run in study["runs"].values():
        assert run["overall"]["n"] == 6  # fold 10's clips, every window type alike
    if model == "deep":  # each run's model file carries its own window and the study's other settings
        specs = {w: load_checkpoint(out / w / "best.pt").spec for w in study["runs"]}
        assert {w: s.feature_config.window for w, s in specs.items()} == {w: w for w in specs}
        assert len({(s.feature_config.n_mels, s.feature_config.window_s, s.model_config.to_dict()["settings"]["base_channels"])
                    for s in specs.values()}) == 1
