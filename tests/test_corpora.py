"""Tests of the corpus loaders and the label vocabulary on tiny synthetic trees named like each corpus."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from emostream.train.corpora import (
    BAD_AUDIO,
    BAD_LABEL,
    BAD_NAME,
    CORPORA,
    EMPTY_AUDIO,
    HIDDEN_FILE,
    LABEL_CONFLICT,
    MISSING_FILE,
    Clip,
    detect_corpus,
    load_corpora,
    load_corpus,
)
from emostream.train.labels import (
    PRESETS,
    VOCABULARY,
    LabelSet,
    normalise_label,
    parse_labels,
    parse_map,
    resolve_label_set,
)

SAMPLE_RATE_HZ = 16000
CLIP_SAMPLES = SAMPLE_RATE_HZ // 10
SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"

# (path relative to the corpus root without extension, label, speaker) for each layout.
CASES: dict[str, list[tuple[str, str, str]]] = {
    "ravdess": [
        ("Actor_01/03-01-01-01-01-01-01", "neutral", "ravdess:01"),
        ("Actor_01/03-01-02-02-01-02-01", "calm", "ravdess:01"),
        ("Actor_02/03-01-08-01-02-01-02", "surprised", "ravdess:02"),
        ("Actor_02/03-02-05-02-01-01-02", "angry", "ravdess:02"),  # song
        ("Actor_13/03-01-07-02-02-02-13", "disgust", "ravdess:13"),
        ("Actor_13/03-01-06-01-01-01-13", "fearful", "ravdess:13"),
        ("Actor_20/03-01-03-01-01-01-20", "happy", "ravdess:20"),
        ("Actor_20/03-01-04-01-01-01-20", "sad", "ravdess:20"),
    ],
    "tess": [
        ("OAF_angry/OAF_back_angry", "angry", "tess:OAF"),
        ("OAF_neutral/OA_bite_neutral", "neutral", "tess:OAF"),
        ("OAF_Pleasant_surprise/OAF_back_ps", "surprised", "tess:OAF"),
        ("OAF_Fear/OAF_food_fear", "fearful", "tess:OAF"),
        ("YAF_pleasant_surprised/YAF_dog_ps", "surprised", "tess:YAF"),
        ("YAF_disgust/YAF_neat_disgust", "disgust", "tess:YAF"),
        ("YAF_sad/YAF_Bean_Sad", "sad", "tess:YAF"),
        ("YAF_happy/YAF_germ_happy", "happy", "tess:YAF"),
    ],
    "nemo": [
        ("samples/EB0_anger_1", "angry", "nemo:EB0"),
        ("samples/EB0_neutral_13", "neutral", "nemo:EB0"),
        ("samples/WR0_surprised_64", "surprised", "nemo:WR0"),
        ("samples/MP0_sadness_79", "sad", "nemo:MP0"),
        ("samples/MP0_fear_3", "fearful", "nemo:MP0"),
        ("samples/KD0_happiness_5", "happy", "nemo:KD0"),
    ],
    "urdu": [
        ("Angry/SM1_F10_A010", "angry", "urdu:SM1"),
        ("Angry/SM3_F1_A049", "angry", "urdu:SM3"),
        ("Happy/SM3_F2_H01", "happy", "urdu:SM3"),
        ("Happy/SF1_F10_H010", "happy", "urdu:SF1"),
        ("Neutral/SF9_F1_N01", "neutral", "urdu:SF9"),
        ("Sad/SF10_F1_S01", "sad", "urdu:SF10"),
        ("Sad/SM24_F3_S07", "sad", "urdu:SM24"),
    ],
    "cremad": [
        ("AudioWAV/1001_DFA_ANG_XX", "angry", "cremad:1001"),
        ("AudioWAV/1001_IEO_NEU_HI", "neutral", "cremad:1001"),
        ("AudioWAV/1002_TSI_FEA_LO", "fearful", "cremad:1002"),
        ("AudioWAV/1091_ITS_DIS_MD", "disgust", "cremad:1091"),
        ("AudioWAV/1091_WSI_HAP_XX", "happy", "cremad:1091"),
        ("AudioWAV/1050_IWL_SAD_XX", "sad", "cremad:1050"),
    ],
    "emodb": [
        ("wav/03a01Fa", "happy", "emodb:03"),
        ("wav/03a01Lb", "boredom", "emodb:03"),
        ("wav/08b02Wa", "angry", "emodb:08"),
        ("wav/10a04Ta", "sad", "emodb:10"),
        ("wav/11a05Ac", "fearful", "emodb:11"),
        ("wav/12b09Ed", "disgust", "emodb:12"),
        ("wav/16a07Nb", "neutral", "emodb:16"),
    ],
    "savee": [
        ("AudioData/DC/a01", "angry", "savee:DC"),
        ("AudioData/DC/su12", "surprised", "savee:DC"),
        ("ALL/JE_sa03", "sad", "savee:JE"),
        ("ALL/JK_n30", "neutral", "savee:JK"),
        ("ALL/KL_f02", "fearful", "savee:KL"),
        ("ALL/KL_h05", "happy", "savee:KL"),
        ("ALL/KL_d11", "disgust", "savee:KL"),
    ],
    "folder": [
        ("Angry/spk1/a", "angry", "folder:spk1"),
        ("happy/spk1/b", "happy", "folder:spk1"),
        ("happy/spk2/c", "happy", "folder:spk2"),
        ("Neutral/d", "neutral", "folder:Neutral/d"),
        ("neutral/e", "neutral", "folder:neutral/e"),
        ("FEAR/f", "fearful", "folder:FEAR/f"),
    ],
}


def write_clip(path: Path, seed: int, n_samples: int = CLIP_SAMPLES) -> Path:
    """A 0.1 s seeded sine plus noise at `path` (format from the suffix)."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(n_samples) / SAMPLE_RATE_HZ
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t_s) + 0.01 * rng.standard_normal(n_samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), SAMPLE_RATE_HZ)
    return path


def build_tree(root: Path, name: str, ext: str) -> dict[Path, tuple[str, str]]:
    """Write corpus `name`'s fixture files under `root`; {path: (label, speaker)} expected."""
    expected = {}
    for seed, (stem, label, speaker) in enumerate(CASES[name]):
        expected[write_clip(root / f"{stem}{ext}", seed)] = (label, speaker)
    (root / "README.txt").write_text("not audio\n")
    return expected


def found(clips: list[Clip]) -> dict[Path, tuple[str, str]]:
    """{path: (label, speaker)} of loaded clips."""
    return {clip.path: (clip.label, clip.speaker) for clip in clips}


@pytest.mark.parametrize("ext", [".wav", ".flac"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_loader_reads_labels_and_speakers(tmp_path: Path, name: str, ext: str) -> None:
    expected = build_tree(tmp_path, name, ext)
    clips, report = load_corpus(name, tmp_path)
    assert found(clips) == expected
    assert {clip.corpus for clip in clips} == {name}
    assert [clip.path for clip in clips] == sorted(expected)
    assert (report.n_clips, report.n_skipped, report.n_ignored) == (len(expected), 0, 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_detect_corpus_recognises_each_layout(tmp_path: Path, name: str) -> None:
    build_tree(tmp_path, name, ".flac")
    assert detect_corpus(tmp_path) == name


def test_detect_corpus_none_and_csv(tmp_path: Path) -> None:
    assert detect_corpus(tmp_path) is None
    write_clip(tmp_path / "misc" / "take_one.wav", 0)
    assert detect_corpus(tmp_path) is None
    assert detect_corpus(tmp_path / "absent") is None
    (tmp_path / "list.csv").write_text("relpath,speaker,label\nmisc/take_one.wav,s1,happy\n")
    assert detect_corpus(tmp_path) == "csv"
    assert detect_corpus(tmp_path / "list.csv") == "csv"


ODD_FILES = [
    ("ravdess", "Actor_01/03-01-01.wav", BAD_NAME),
    ("ravdess", "Actor_01/03-01-09-01-01-01-01.wav", BAD_LABEL),
    ("tess", "OAF_angry/OAF_back_sad.wav", LABEL_CONFLICT),
    ("tess", "OAF_angry/OAF_back_bored_stiff.wav", BAD_LABEL),
    ("tess", "MAF_angry/MAF_back_angry.wav", BAD_NAME),
    ("nemo", "samples/EB0_contempt_3.wav", BAD_LABEL),
    ("urdu", "Angry/SM1_F11_H011.wav", LABEL_CONFLICT),
    ("urdu", "Angry/SM1_F11_X011.wav", BAD_NAME),
    ("cremad", "AudioWAV/1001_DFA_XXX_XX.wav", BAD_LABEL),
    ("emodb", "wav/03a01Xa.wav", BAD_LABEL),
    ("savee", "ALL/DC_z01.wav", BAD_LABEL),
    ("savee", "ALL/a01.wav", BAD_NAME),
    ("folder", "contempt/spk1/x.wav", BAD_LABEL),
    ("folder", "loose.wav", BAD_NAME),
]


@pytest.mark.parametrize(("name", "relpath", "reason"), ODD_FILES)
def test_odd_names_are_counted_not_fatal(tmp_path: Path, name: str, relpath: str, reason: str) -> None:
    expected = build_tree(tmp_path, name, ".wav")
    write_clip(tmp_path / relpath, 99)
    clips, report = load_corpus(name, tmp_path)
    assert found(clips) == expected
    assert report.skipped == {reason: 1}
    assert report.examples == ((reason, relpath),)
    assert reason in report.summary()


def test_bad_audio_is_counted_not_fatal(tmp_path: Path) -> None:
    expected = build_tree(tmp_path, "ravdess", ".flac")
    (tmp_path / "Actor_03").mkdir()
    (tmp_path / "Actor_03/03-01-01-01-01-01-03.wav").write_bytes(b"not a wav header" * 8)
    write_clip(tmp_path / "Actor_03/03-01-01-01-01-02-03.wav", 1, n_samples=0)
    write_clip(tmp_path / "Actor_03/._03-01-01-01-01-01-03.wav", 2)
    write_clip(tmp_path / ".git/Actor_03/03-01-01-01-02-01-03.wav", 3)
    clips, report = load_corpus("ravdess", tmp_path)
    assert found(clips) == expected
    assert report.skipped == {BAD_AUDIO: 1, EMPTY_AUDIO: 1, HIDDEN_FILE: 1}
    unchecked, unchecked_report = load_corpus("ravdess", tmp_path, check_audio=False)
    assert len(unchecked) == len(expected) + 2
    assert unchecked_report.skipped == {HIDDEN_FILE: 1}


def write_nemo_table(root: Path, rows: list[tuple[str, str, str]]) -> None:
    """nEMO's data.tsv with (file_id, emotion, speaker_id) rows, speaker ids padded as in the real file."""
    lines = ["file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage"]
    lines += [
        f"{file_id}\t{emotion}\tTekst.\ttekst\t        {speaker}\tfemale\t27"
        for file_id, emotion, speaker in rows
    ]
    (root / "data.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_nemo_prefers_data_tsv(tmp_path: Path) -> None:
    expected = build_tree(tmp_path, "nemo", ".flac")
    write_nemo_table(
        tmp_path,
        [
            ("EB0_anger_1.wav", "anger", "EB0"),  # the table says .wav, the file is .flac
            ("EB0_neutral_13.flac", "Neutral", "XX9"),  # the table wins over the name
            ("GONE_fear_7.flac", "fear", "GONE"),
        ],
    )
    expected[tmp_path / "samples/EB0_neutral_13.flac"] = ("neutral", "nemo:XX9")
    clips, report = load_corpus("nemo", tmp_path)
    assert found(clips) == expected
    assert report.skipped == {MISSING_FILE: 1}
    assert report.examples == ((MISSING_FILE, "samples/GONE_fear_7"),)
    assert detect_corpus(tmp_path) == "nemo"


def test_csv_manifest(tmp_path: Path) -> None:
    for seed, relpath in enumerate(["a/x.wav", "b/y.flac", "c/z.wav", "a/w.wav"]):
        write_clip(tmp_path / relpath, seed)
    rows = [
        "relpath, speaker, label",
        "a/x.wav, s1, Neutral",
        "b/y.flac, s1, neutral",
        "c/z.wav, , SAD",
        "gone.wav, s2, angry",
        "a/w.wav, s3, contempt",
    ]
    manifest = tmp_path / "clips.csv"
    manifest.write_text("\n".join(rows) + "\n")
    for root in (manifest, tmp_path):
        clips, report = load_corpus("csv", root)
        assert found(clips) == {
            tmp_path / "a/x.wav": ("neutral", "csv:s1"),
            tmp_path / "b/y.flac": ("neutral", "csv:s1"),
            tmp_path / "c/z.wav": ("sad", "csv:c/z"),
        }
        assert report.skipped == {MISSING_FILE: 1, BAD_LABEL: 1}


def test_csv_manifest_without_columns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "clips.csv").write_text("file,emotion\na.wav,happy\n")
    with pytest.raises(ValueError, match="relpath"):
        load_corpus("csv", tmp_path)


def test_folder_layout_notes_unknown_speakers(tmp_path: Path) -> None:
    build_tree(tmp_path, "folder", ".wav")
    _, report = load_corpus("folder", tmp_path)
    assert any("3 clips" in note and "own speaker" in note for note in report.notes)


def test_unknown_corpus_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ravdess.*savee"):
        load_corpus("iemocap", tmp_path)
    with pytest.raises(FileNotFoundError, match="absent"):
        load_corpus("tess", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="cremad"):
        load_corpora(tmp_path, ["CREMA-D"])
    with pytest.raises(FileNotFoundError, match="absent"):
        load_corpora(tmp_path / "absent", ["tess"])


def test_empty_corpus_is_noted(tmp_path: Path) -> None:
    clips, report = load_corpus("emodb", tmp_path)
    assert clips == []
    assert "no clips found" in report.notes[0]


def test_load_corpora_from_data_dir(tmp_path: Path) -> None:
    expected = build_tree(tmp_path / "ravdess", "ravdess", ".wav")
    expected |= build_tree(tmp_path / "emodb", "emodb", ".flac")
    clips, reports = load_corpora(tmp_path)
    assert found(clips) == expected
    assert list(reports) == ["ravdess", "emodb"]
    only, only_reports = load_corpora(tmp_path, ["EMO-DB"])
    assert {clip.corpus for clip in only} == {"emodb"}
    assert list(only_reports) == ["emodb"]


def test_registry_lists_every_layout() -> None:
    assert set(CORPORA) == set(CASES) | {"csv", "urbansound8k", "gtzan"}  # the last two: test_corpora_tasks.py


# ---------------------------------------------------------------- labels


@settings(max_examples=50, deadline=None, database=None)
@given(st.sampled_from(VOCABULARY), st.lists(st.booleans(), min_size=12, max_size=12))
def test_normalise_label_ignores_case(label: str, upper: list[bool]) -> None:
    mixed = "".join(c.upper() if up else c for c, up in zip(label, upper, strict=False))
    assert normalise_label(f" {mixed} ") == label


def test_aliases_and_unknown_labels() -> None:
    assert [normalise_label(name) for name in ("Anger", "ps", "Pleasant surprise", "fear", "bored")] == [
        "angry",
        "surprised",
        "surprised",
        "fearful",
        "boredom",
    ]
    assert normalise_label("contempt") is None


def test_presets() -> None:
    seven, eight, four = PRESETS["7class"], PRESETS["8class"], PRESETS["4class"]
    assert seven.labels == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert eight.labels == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert four.labels == ("neutral", "happy", "sad", "angry")
    assert [seven.map_label("calm"), eight.map_label("calm"), four.map_label("Calm")] == [
        "neutral",
        "calm",
        "neutral",
    ]
    assert [preset.map_label("boredom") for preset in (seven, eight, four)] == [None, None, None]
    assert four.map_label("fearful") is None
    assert [four.class_index("Angry"), seven.class_index("calm"), four.class_index("surprised")] == [
        3,
        0,
        None,
    ]


def test_parse_labels_and_map() -> None:
    assert parse_labels("neutral, Happy,SAD") == ("neutral", "happy", "sad")
    assert parse_map("calm=neutral,ps=surprised") == {"calm": "neutral", "surprised": "surprised"}
    assert parse_map("") == {}
    labels = LabelSet(
        parse_labels("neutral,happy,sad,angry,fearful,disgust,surprised"),
        parse_map("calm=neutral,ps=surprised"),
    )
    assert labels == PRESETS["7class"]
    with pytest.raises(ValueError, match="known labels: neutral, calm"):
        parse_labels("neutral,joyful")
    with pytest.raises(ValueError, match="from=to"):
        parse_map("calm")
    with pytest.raises(ValueError, match="known labels"):
        parse_map("calm=serene")


def test_label_set_checks_itself() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet(("happy", "Happy"))
    with pytest.raises(ValueError, match="not one of the labels"):
        LabelSet(("happy", "sad"), {"calm": "neutral"})
    with pytest.raises(ValueError, match="itself a label"):
        LabelSet(("neutral", "calm"), {"calm": "neutral"})


def test_resolve_label_set() -> None:
    assert resolve_label_set("7CLASS") == PRESETS["7class"]
    merged = resolve_label_set("4class", "boredom=sad")
    assert merged.map_label("boredom") == "sad"
    assert merged.map_label("calm") == "neutral"
    assert resolve_label_set("happy,sad").labels == ("happy", "sad")
    with pytest.raises(ValueError, match="7class"):
        resolve_label_set("9class")


# ---------------------------------------------------------------- the real corpora


def read_manifest(data_dir: Path) -> dict[Path, dict[str, str]]:
    """The shared manifest as {absolute path: row}."""
    with (data_dir / "manifest.csv").open(newline="") as handle:
        return {data_dir / row["relpath"]: row for row in csv.DictReader(handle)}


@pytest.mark.corpus
def test_real_corpora_match_manifest() -> None:
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    manifest = read_manifest(SHARED_DATA)
    names = sorted({row["dataset"] for row in manifest.values()})
    clips, reports = load_corpora(SHARED_DATA, names)
    assert {name: report.n_skipped for name, report in reports.items()} == dict.fromkeys(names, 0)
    assert Counter(clip.corpus for clip in clips) == Counter(row["dataset"] for row in manifest.values())
    assert found(clips) == {path: (row["emotion_norm"], row["speaker"]) for path, row in manifest.items()}
    for name in names:
        assert detect_corpus(SHARED_DATA / name) == name
