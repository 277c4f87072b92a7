"""Corpus loaders: list each emotional-speech corpus's clips from its own file names and files.

Every loader yields `Clip(path, label, speaker, corpus)`: `label` is the corpus's own label
normalised to `train.labels.VOCABULARY` (before any task mapping such as calm -> neutral) and
`speaker` is prefixed with the corpus (`ravdess:01`) so ids never collide across corpora.
Files that do not fit (unparseable names, unknown emotion codes, unreadable audio headers) are
skipped and counted in a `LoadReport`, never fatal.

The machinery every layout shares (`Clip`, `LoadReport`, skip reasons, the loading context) is
`train.corpus_base`; the environmental-sound and music layouts (UrbanSound8K, GTZAN) are
`train.corpora_tasks`, registered in `CORPORA` here. The layouts below share this module's private
parsing helpers.

Layouts (`CORPORA`; any audio extension soundfile reads, searched recursively under `root`):

- ravdess: `Actor_NN/03-CC-EE-II-SS-RR-AA.ext`, speech (CC=01) and song (CC=02); speaker = AA.
- tess: `<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.ext`; `OA_`/`YA_` prefixes (the real
  `OA_bite_neutral`) are OAF/YAF; `ps` = pleasant surprise. A name whose emotion contradicts its
  folder's is skipped.
- nemo: `samples/<SPK>_<emotion>_<n>.ext` + `data.tsv` (file_id, emotion, speaker_id, ...);
  data.tsv wins when present (matched by file stem, whatever the extension), names otherwise.
- urdu: `<Angry|Happy|Neutral|Sad>/S<G><X>_F<NN>_<E><NNN>.ext`. The speaker is `S<G><X>`
  (`SM3`): X numbers speakers per gender across the whole corpus (SM1..SM27, SF1..SF11 = the 38
  speakers of the paper) and the same id recurs in several emotion folders, so it is one person.
- cremad: `1001_DFA_ANG_XX.ext`; speaker 1001, emotion ANG DIS FEA HAP NEU SAD.
- emodb: `03a01Fa.ext`; speaker 03, emotion W anger, L boredom, E disgust, A fear,
  F happiness, T sadness, N neutral. Boredom stays `boredom`.
- savee: `DC_a01.ext`, or the original `DC/a01.ext`; emotion a d f h n sa su.
- folder: `root/<label>/.../*.ext`, label = folder name (any case or alias). Speakers are unknown:
  files in a subfolder `root/<label>/<sub>/...` get speaker `<sub>` (shared across label folders);
  files directly in `root/<label>/` are each their own speaker, so splits of them are by clip
  (the report says so).
- csv: a manifest with columns `relpath, speaker, label` (paths relative to the CSV); `root` is
  the CSV file or a folder holding exactly one. An empty speaker makes the file its own speaker.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emostream.train.corpora_tasks import TASK_FORMATS, looks_like_us8k
from emostream.train.corpus_base import BAD_AUDIO as BAD_AUDIO  # re-exported: callers know them from here
from emostream.train.corpus_base import (
    BAD_LABEL,
    BAD_NAME,
    LABEL_CONFLICT,
    MISSING_FILE,
    Clip,
    CorpusFormat,
    LoadReport,
    NameParser,
)
from emostream.train.corpus_base import EMPTY_AUDIO as EMPTY_AUDIO
from emostream.train.corpus_base import HIDDEN_FILE as HIDDEN_FILE
from emostream.train.corpus_base import N_EXAMPLES_PER_REASON as N_EXAMPLES_PER_REASON
from emostream.train.corpus_base import Context as _Context
from emostream.train.corpus_base import OddFile as _OddFile
from emostream.train.corpus_base import list_audio as _list_audio
from emostream.train.corpus_base import load_files as _load_files
from emostream.train.corpus_base import load_named as _load_named
from emostream.train.corpus_base import make_clip as _clip
from emostream.train.labels import normalise_label

# ---------------------------------------------------------------- name parsing helpers


def _clean_row(row: dict[Any, Any]) -> dict[str, str]:
    """A csv row with lower-case stripped column names and stripped cells (missing cells: "")."""
    return {key.strip().lower(): (value or "").strip() for key, value in row.items() if isinstance(key, str)}


def _match(pattern: re.Pattern[str], stem: str) -> re.Match[str]:
    """`pattern.fullmatch(stem)`, raising `_OddFile(BAD_NAME)` when it does not match."""
    match = pattern.fullmatch(stem)
    if match is None:
        raise _OddFile(BAD_NAME)
    return match


def _code(table: Mapping[str, str], code: str) -> str:
    """The vocabulary label of a corpus's emotion code, raising `_OddFile(BAD_LABEL)` when unknown."""
    label = table.get(code)
    if label is None:
        raise _OddFile(BAD_LABEL)
    return label


def _label(name: str) -> str:
    """`normalise_label`, raising `_OddFile(BAD_LABEL)` when the name is no known emotion."""
    label = normalise_label(name)
    if label is None:
        raise _OddFile(BAD_LABEL)
    return label


def _agree_with_folder(label: str, folder_emotion: str) -> str:
    """`label`, raising `_OddFile(LABEL_CONFLICT)` when the folder names a different known emotion."""
    folder_label = normalise_label(folder_emotion)
    if folder_label is not None and folder_label != label:
        raise _OddFile(LABEL_CONFLICT)
    return label


# ---------------------------------------------------------------- corpora named by one regex


@dataclass(frozen=True, slots=True)
class NameRule:
    """A corpus whose file stems fit one regex: the speaker group, the emotion group and its code map.

    ``emotions`` maps the corpus's emotion codes (after ``code_case``) to vocabulary labels; None
    means the group is an emotion name (``normalise_label``). ``speaker`` turns the speaker group
    into the speaker id (it may look at the file's folder); ``folder_must_agree`` skips a file
    whose folder names a different emotion. A stem that does not fit is ``BAD_NAME``, an unknown
    code ``BAD_LABEL``.
    """

    regex: re.Pattern[str]
    speaker_group: int
    emotion_group: int
    emotions: Mapping[str, str] | None
    code_case: Callable[[str], str] = str.upper
    speaker: Callable[[str | None, Path], str] = lambda group, path: str(group)
    folder_must_agree: bool = False

    def __call__(self, path: Path, root: Path) -> tuple[str, str]:
        match = _match(self.regex, path.stem)
        speaker = self.speaker(match[self.speaker_group], path)
        code = match[self.emotion_group]
        label = _label(code) if self.emotions is None else _code(self.emotions, self.code_case(code))
        if self.folder_must_agree:
            _agree_with_folder(label, path.parent.name)
        return label, speaker


def _urdu_speaker(group: str | None, path: Path) -> str:
    """`S<G><X>` as one id per person: `sm03` and `SM3` are `SM3`."""
    assert group is not None
    return f"S{group[1].upper()}{int(group[2:])}"


def _savee_speaker(group: str | None, path: Path) -> str:
    """`DC` from `DC_a01`, else from the original layout's `DC/` folder; `BAD_NAME` without either."""
    if group is None:
        if _SAVEE_SPEAKER.fullmatch(path.parent.name) is None:
            raise _OddFile(BAD_NAME)
        group = path.parent.name
    return group.upper()


_SAVEE_SPEAKER = re.compile(r"[A-Z]{2}", re.IGNORECASE)

# `MM-CC-EE-II-SS-RR-AA`: modality, channel (01 speech, 02 song), emotion, ..., actor.
parse_ravdess = NameRule(
    re.compile(r"(\d\d)-(0[12])-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)"),
    speaker_group=7,
    emotion_group=3,
    emotions={
        "01": "neutral",
        "02": "calm",
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fearful",
        "07": "disgust",
        "08": "surprised",
    },
)
# `<SPK>_<emotion>_<n>` (emotions anger, fear, happiness, neutral, sadness, surprised).
parse_nemo = NameRule(re.compile(r"([A-Za-z]+\d*)_([A-Za-z]+)_(\d+)"), speaker_group=1, emotion_group=2, emotions=None)
# `S<G><X>_F<NN>_<E><NNN>`: speaker `S<G><X>`, emotion A/H/N/S, checked against the folder.
parse_urdu = NameRule(
    re.compile(r"(S[MF]\d+)_F(\d+)_([AHNS])(\d+)", re.IGNORECASE),
    speaker_group=1,
    emotion_group=3,
    emotions={"A": "angry", "H": "happy", "N": "neutral", "S": "sad"},
    speaker=_urdu_speaker,
    folder_must_agree=True,
)
# `<speaker>_<sentence>_<emotion>_<level>`, e.g. `1001_DFA_ANG_XX`.
parse_cremad = NameRule(
    re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})", re.IGNORECASE),
    speaker_group=1,
    emotion_group=3,
    emotions={"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"},
)
# `<speaker><text><emotion><version>`, e.g. `03a01Fa`; German initials (W = Wut = anger).
parse_emodb = NameRule(
    re.compile(r"(\d\d)([ab]\d\d)([A-Z])([a-z])", re.IGNORECASE),
    speaker_group=1,
    emotion_group=3,
    emotions={"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"},
)
# `<SPK>_<emotion><n>` (`DC_a01`), or `<emotion><n>` inside a `<SPK>/` folder (the original).
parse_savee = NameRule(
    re.compile(r"(?:([A-Z]{2})_)?([a-z]{1,2})(\d+)", re.IGNORECASE),
    speaker_group=1,
    emotion_group=2,
    emotions={"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"},
    code_case=str.lower,
    speaker=_savee_speaker,
)


# ---------------------------------------------------------------- TESS

_TESS_SPEAKERS = {"oaf": "OAF", "oa": "OAF", "yaf": "YAF", "ya": "YAF"}


def _tess_emotion(tokens: list[str]) -> str:
    """The label of the longest known emotion suffix after the word (`pleasant_surprise`, `ps`)."""
    for start in range(2, len(tokens)):
        label = normalise_label("_".join(tokens[start:]))
        if label is not None:
            return label
    raise _OddFile(BAD_LABEL)


def parse_tess(path: Path, root: Path) -> tuple[str, str]:
    """`<OAF|YAF>_<word>_<emotion>`, checked against a `<OAF|YAF>_<emotion>` folder when present."""
    tokens = path.stem.lower().split("_")
    speaker = _TESS_SPEAKERS.get(tokens[0])
    if speaker is None or len(tokens) < 3:
        raise _OddFile(BAD_NAME)
    label = _tess_emotion(tokens)
    folder_speaker, _, folder_emotion = path.parent.name.lower().partition("_")
    if folder_speaker in _TESS_SPEAKERS:
        _agree_with_folder(label, folder_emotion)
    return label, speaker


# ---------------------------------------------------------------- nEMO

_NEMO_COLUMNS = ("file_id", "emotion", "speaker_id")


def _read_nemo_table(ctx: _Context) -> dict[str, tuple[str, str]]:
    """data.tsv as {file stem: (emotion, speaker)}; {} (with a note) when absent or malformed."""
    table_path = ctx.root / "data.tsv"
    if not table_path.is_file():
        ctx.notes.append("no data.tsv: labels and speakers read from file names")
        return {}
    with table_path.open(newline="", encoding="utf-8") as handle:
        rows = [_clean_row(row) for row in csv.DictReader(handle, delimiter="\t")]
    if rows and not set(_NEMO_COLUMNS) <= rows[0].keys():
        ctx.notes.append(f"data.tsv lacks columns {_NEMO_COLUMNS}: labels read from file names")
        return {}
    return {Path(row["file_id"]).stem: (row["emotion"], row["speaker_id"]) for row in rows}


def _load_nemo(fmt: CorpusFormat, ctx: _Context) -> list[Clip]:
    """nEMO: data.tsv's emotion and speaker for the files it lists, names for the others."""
    table = _read_nemo_table(ctx)

    def parse(path: Path, root: Path) -> tuple[str, str]:
        row = table.get(path.stem)
        if row is None:
            return parse_nemo(path, root)
        emotion, speaker = row
        return _label(emotion), speaker

    clips = _load_files(ctx, parse)
    present = {path.stem for path in _list_audio(ctx.root)[0]}
    for stem in sorted(table.keys() - present):
        ctx.skip(ctx.root / "samples" / stem, MISSING_FILE)
    return clips


# ---------------------------------------------------------------- generic folder per class


def parse_folder(path: Path, root: Path) -> tuple[str, str]:
    """`<label>/<sub>/.../file` -> speaker `<sub>`; `<label>/file` -> speaker `<label>/<stem>`."""
    parts = path.relative_to(root).parts
    if len(parts) < 2:
        raise _OddFile(BAD_NAME)
    label = _label(parts[0])
    if len(parts) > 2:
        return label, parts[1]
    return label, Path(*parts).with_suffix("").as_posix()


def _load_folder(fmt: CorpusFormat, ctx: _Context) -> list[Clip]:
    """Folder per class; notes how many clips had to be their own speaker."""
    clips = _load_files(ctx, parse_folder)
    n_alone = sum(clip.path.parent.parent == ctx.root for clip in clips)
    if n_alone:
        ctx.notes.append(
            f"{n_alone} clips lie directly in their label folder: no speaker is known, each file is its "
            "own speaker, so splits of them are by clip, not by speaker"
        )
    return clips


# ---------------------------------------------------------------- CSV manifest

_CSV_COLUMNS = ("relpath", "speaker", "label")


def _find_manifest(root: Path) -> Path:
    """`root` itself when it is a file, else the one `*.csv` in it; ValueError otherwise."""
    if root.is_file():
        return root
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise ValueError(f"{root}: expected exactly one .csv manifest, found {len(found)}")
    return found[0]


def _read_manifest(manifest: Path) -> list[dict[str, str]]:
    """The manifest's rows with stripped, lower-case column names; ValueError when columns lack."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        rows = [_clean_row(row) for row in reader]
        columns = {(name or "").strip().lower() for name in reader.fieldnames or ()}
    missing = [name for name in ("relpath", "label") if name not in columns]
    if missing:
        raise ValueError(f"{manifest}: missing column(s) {missing}; a manifest has {', '.join(_CSV_COLUMNS)}")
    return rows


def _load_csv(fmt: CorpusFormat, ctx: _Context) -> list[Clip]:
    """A `relpath, speaker, label` manifest; an empty speaker makes the file its own speaker."""
    rows = _read_manifest(_find_manifest(ctx.root))
    clips: list[Clip] = []
    for row in rows:
        path = ctx.root / row["relpath"]
        label = normalise_label(row["label"])
        if not path.is_file():
            ctx.skip(path, MISSING_FILE)
        elif label is None:
            ctx.skip(path, BAD_LABEL)
        elif (clip := _clip(ctx, path, label, _manifest_speaker(row))) is not None:
            clips.append(clip)
    return clips


def _manifest_speaker(row: dict[str, str]) -> str:
    """The row's speaker, or its relpath without suffix (its own speaker) when the cell is empty."""
    return row.get("speaker") or Path(row["relpath"]).with_suffix("").as_posix()


# ---------------------------------------------------------------- registry and API

CORPORA: dict[str, CorpusFormat] = {
    fmt.name: fmt
    for fmt in (
        CorpusFormat("ravdess", "Actor_NN/03-01-EE-II-SS-RR-AA.wav", parse_ravdess, _load_named),
        CorpusFormat("tess", "<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.wav", parse_tess, _load_named),
        CorpusFormat("nemo", "samples/<SPK>_<emotion>_<n>.wav + data.tsv", parse_nemo, _load_nemo),
        CorpusFormat("urdu", "<Angry|Happy|Neutral|Sad>/S<G><X>_F<NN>_<E><NNN>.wav", parse_urdu, _load_named),
        CorpusFormat("cremad", "1001_DFA_ANG_XX.wav", parse_cremad, _load_named),
        CorpusFormat("emodb", "03a01Fa.wav", parse_emodb, _load_named),
        CorpusFormat("savee", "DC_a01.wav or DC/a01.wav", parse_savee, _load_named),
        CorpusFormat("folder", "<label>/[<speaker>/]*.wav", parse_folder, _load_folder),
        CorpusFormat("csv", "manifest.csv with relpath, speaker, label", None, _load_csv),
    )
} | TASK_FORMATS
"""Every supported layout by name; the named corpora's names are also their folder names in a data dir."""

NAMED_CORPORA: tuple[str, ...] = ("ravdess", "tess", "nemo", "urdu", "cremad", "emodb", "savee", "gtzan")
"""Corpora recognisable from their own file names (`detect_corpus` tries these first)."""


def corpus_format(name: str) -> CorpusFormat:
    """The layout called `name` (case, `-` and `_` ignored: "CREMA-D" is cremad); ValueError if unknown."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    fmt = CORPORA.get(key)
    if fmt is None:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    return fmt


def load_corpus(name: str, root: Path, *, check_audio: bool = True) -> tuple[list[Clip], LoadReport]:
    """All clips of corpus `name` under `root` (sorted by path) and a report of skipped files.

    `check_audio` reads every file's header with `soundfile.info` (cheap) and skips unreadable
    or empty ones. FileNotFoundError when `root` does not exist.
    """
    fmt = corpus_format(name)
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{fmt.name} corpus not found: {root} does not exist (expected {fmt.layout})")
    if fmt.name != "csv" and not root.is_dir():
        raise NotADirectoryError(f"{fmt.name} corpus root must be a folder: {root} (expected {fmt.layout})")
    ctx = _Context(fmt.name, root.parent if root.is_file() else root, check_audio)
    clips = sorted(fmt.load(fmt, ctx), key=lambda clip: clip.path)
    if not clips:
        ctx.notes.append(f"no clips found: is this the {fmt.name} layout ({fmt.layout})?")
    return clips, ctx.report(len(clips))


def load_corpora(
    data_dir: Path, names: Sequence[str] | None = None, *, check_audio: bool = True
) -> tuple[list[Clip], dict[str, LoadReport]]:
    """Clips of several corpora, each from `data_dir/<name>` (ravdess, tess, nemo, ...).

    `names=None` loads every named corpus whose folder exists. Returns all clips (in the order
    of `names`) and each corpus's report.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    if names is None:
        names = [name for name in NAMED_CORPORA if (data_dir / name).is_dir()]
    clips: list[Clip] = []
    reports: dict[str, LoadReport] = {}
    for name in dict.fromkeys(corpus_format(name).name for name in names):
        corpus_clips, reports[name] = load_corpus(name, corpus_root(data_dir, name), check_audio=check_audio)
        clips.extend(corpus_clips)
    return clips, reports


def corpus_root(data_dir: Path, name: str) -> Path:
    """Where corpus `name` lies for a data folder: `data_dir/<name>`, a child of another spelling
    (`UrbanSound8K/` for urbansound8k), or `data_dir` itself when it is that corpus (`--data` naming
    the corpus). Falls back to `data_dir/<name>` (which then does not exist)."""
    data_dir = Path(data_dir)
    key = corpus_format(name).name
    if (data_dir / key).is_dir():
        return data_dir / key
    if data_dir.is_dir():
        for child in sorted(data_dir.iterdir()):
            if child.is_dir() and child.name.lower().replace("-", "").replace("_", "") == key:
                return child
        if detect_corpus(data_dir) == key:
            return data_dir
    return data_dir / key


def _n_parsed(parse: NameParser, files: list[Path], root: Path) -> int:
    """How many of `files` `parse` reads without complaint."""
    n = 0
    for path in files:
        try:
            parse(path, root)
        except _OddFile:
            continue
        n += 1
    return n


def _looks_like_manifest(root: Path) -> bool:
    """True when `root` is (or holds exactly one) CSV with `relpath` and `label` columns."""
    try:
        _read_manifest(_find_manifest(root))
    except (ValueError, OSError, UnicodeDecodeError, csv.Error):
        return False
    return True


def detect_corpus(root: Path) -> str | None:
    """The layout `root` looks like (a `CORPORA` name), or None.

    A CSV manifest, nEMO's `data.tsv` + `samples/` or UrbanSound8K's metadata decide at once; otherwise
    the named corpus whose name parser reads most audio files wins if it reads more than half of
    them, and then a folder-per-class layout is tried. Reads names only, no audio.
    """
    root = Path(root)
    if not root.is_dir():
        return "csv" if root.is_file() and _looks_like_manifest(root) else None
    if (root / "data.tsv").is_file() and (root / "samples").is_dir():
        return "nemo"
    if looks_like_us8k(root):
        return "urbansound8k"
    files = _list_audio(root)[0]
    for candidates in (NAMED_CORPORA, ("folder",)):
        votes = {name: _n_parsed(_parser(name), files, root) for name in candidates}
        best = max(votes, key=lambda name: votes[name])
        if 2 * votes[best] > len(files) > 0:
            return best
    return "csv" if _looks_like_manifest(root) else None


def _parser(name: str) -> NameParser:
    """The name parser of a layout that has one."""
    parse = CORPORA[name].parse
    assert parse is not None, f"{name} has no name parser"
    return parse
