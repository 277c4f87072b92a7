"""Corpus loaders for tasks other than speech emotion: UrbanSound8K (environmental sound) and GTZAN (music genres).

Labels are the corpus's own class names (`dog_bark`, `jazz`), not the emotion vocabulary; a model
trained on them takes its label set from the data (`emostream train --labels data`, the default for
these corpora) and is marked as not about speech (`SPEECH_CORPORA`), so the streamer classifies every
window instead of gating on a speech detector.

- urbansound8k: `metadata/UrbanSound8K.csv` (slice_file_name, fsID, start, end, salience, fold,
  classID, class) and `audio/fold1..fold10/<slice_file_name>`. The official protocol is 10-fold
  cross-validation on the given folds (slices of one recording share a fold; a random split leaks
  them into training and inflates accuracy), so a clip's group (`Clip.speaker`) is its fold:
  splits never cut a fold, and `train.splits.default_holdout` tests on fold 10 and validates on fold 9.
- gtzan: a folder per genre, `<genre>/<genre>.NNNNN.<wav|au>` (the original `genres/` tree or the
  Kaggle `genres_original/`). There are no speakers: every clip is its own group, so its 5-s windows
  never straddle training and test (the known GTZAN repetitions of one artist can still; the report
  says so).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from emostream.train.corpus_base import (
    BAD_LABEL,
    BAD_NAME,
    MISSING_FILE,
    Clip,
    Context,
    CorpusFormat,
    OddFile,
    load_named,
    make_clip,
)

US8K_METADATA = Path("metadata") / "UrbanSound8K.csv"
US8K_COLUMNS = ("slice_file_name", "fold", "class")
US8K_FOLDS = tuple(f"fold{k}" for k in range(1, 11))
SPEECH_CORPORA = frozenset({"ravdess", "tess", "nemo", "urdu", "cremad", "emodb", "savee", "folder", "csv"})
"""Layouts whose models are about speech (the streamer gates them on a speech detector)."""
TASK_LICENCES = {
    "urbansound8k": "UrbanSound8K: CC BY-NC 3.0 (non-commercial)",
    "gtzan": "GTZAN: research use (the clips' rights belong to their owners)",
}


def is_speech_corpus(name: str) -> bool:
    """True when a model trained on corpus ``name`` is about speech (VAD gating applies)."""
    return name in SPEECH_CORPORA


# ---------------------------------------------------------------- UrbanSound8K


def _read_us8k_metadata(root: Path) -> list[dict[str, str]]:
    """The metadata rows (stripped cells); ValueError when the file lacks a needed column."""
    path = root / US8K_METADATA
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = {(c or "").strip() for c in reader.fieldnames or ()}
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    missing = [c for c in US8K_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; UrbanSound8K's metadata has {', '.join(US8K_COLUMNS)}")
    return rows


def _load_us8k(fmt: CorpusFormat, ctx: Context) -> list[Clip]:
    """Every row of the metadata whose file is under `audio/fold<k>/`; group = fold."""
    if not (ctx.root / US8K_METADATA).is_file():
        ctx.notes.append(f"no {US8K_METADATA.as_posix()}: not the UrbanSound8K layout")
        return []
    clips: list[Clip] = []
    for row in _read_us8k_metadata(ctx.root):
        fold = f"fold{row['fold']}"
        path = ctx.root / "audio" / fold / row["slice_file_name"]
        if fold not in US8K_FOLDS:
            ctx.skip(path, BAD_NAME)
        elif not row["class"]:
            ctx.skip(path, BAD_LABEL)
        elif not path.is_file():
            ctx.skip(path, MISSING_FILE)
        elif (clip := make_clip(ctx, path, row["class"], fold)) is not None:
            clips.append(clip)
    return clips


# ---------------------------------------------------------------- GTZAN

_GTZAN_NAME = re.compile(r"([a-z]+)\.(\d{5})", re.IGNORECASE)


def parse_gtzan(path: Path, root: Path) -> tuple[str, str]:
    """`<genre>/<genre>.NNNNN.ext` -> (genre, the clip's own group `<genre>.NNNNN`)."""
    match = _GTZAN_NAME.fullmatch(path.stem)
    if match is None or match[1].lower() != path.parent.name.lower():
        raise OddFile(BAD_NAME)
    return match[1].lower(), path.stem.lower()


def _load_gtzan(fmt: CorpusFormat, ctx: Context) -> list[Clip]:
    clips = load_named(fmt, ctx)
    if clips:
        ctx.notes.append(
            "GTZAN has no speaker or artist ids: each clip is its own group, so a split keeps a clip's windows "
            "together but may put one artist on both sides"
        )
    return clips


def looks_like_us8k(root: Path) -> bool:
    """True when `root` holds UrbanSound8K's metadata file."""
    return (Path(root) / US8K_METADATA).is_file()


TASK_FORMATS: dict[str, CorpusFormat] = {
    fmt.name: fmt
    for fmt in (
        CorpusFormat("urbansound8k", "metadata/UrbanSound8K.csv + audio/fold1..fold10/*.wav", None, _load_us8k),
        CorpusFormat("gtzan", "<genre>/<genre>.NNNNN.wav (a folder per genre)", parse_gtzan, _load_gtzan),
    )
}
"""The non-speech layouts, registered in `train.corpora.CORPORA`."""
