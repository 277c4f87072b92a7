"""The loading machinery every corpus layout shares: `Clip`, `LoadReport`, skip reasons, audio listing, header checks.

`train.corpora` (emotional speech, folder, manifest) and `train.corpora_tasks` (environmental sound,
music genres) build their `CorpusFormat`s on it; a loader counts every file it cannot use in the
`Context` instead of failing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import soundfile as sf

N_EXAMPLES_PER_REASON = 3
"""How many example paths a `LoadReport` keeps for each reason a file was skipped."""

BAD_NAME = "unparseable name"
BAD_LABEL = "unknown emotion"
LABEL_CONFLICT = "emotion contradicts folder"
BAD_AUDIO = "unreadable audio"
EMPTY_AUDIO = "empty audio"
HIDDEN_FILE = "hidden file"
MISSING_FILE = "listed but missing"


@dataclass(frozen=True, slots=True)
class Clip:
    """One labelled recording, `speaker` prefixed with the corpus.

    `label`: for speech corpora the shared emotion vocabulary (`train.labels`); for other tasks the
    corpus's own class name (`dog_bark`, `jazz`). `speaker`: the group a split must keep together
    (a speaker; UrbanSound8K's fold; a GTZAN clip).
    """

    path: Path
    label: str
    speaker: str
    corpus: str


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What loading one corpus found: clips kept, files skipped (by reason, with examples), notes."""

    corpus: str
    root: Path
    n_clips: int
    n_ignored: int
    """Files that are not audio (README, data.tsv, ...), ignored without counting as skipped."""
    skipped: dict[str, int] = field(default_factory=dict, hash=False)
    examples: tuple[tuple[str, str], ...] = ()
    """(reason, path relative to root) for the first few skipped files of each reason."""
    notes: tuple[str, ...] = ()

    @property
    def n_skipped(self) -> int:
        """Files (or manifest rows) skipped for any reason."""
        return sum(self.skipped.values())

    def summary(self) -> str:
        """A few human-readable lines: counts, skip reasons with examples, notes."""
        lines = [f"{self.corpus} ({self.root}): {self.n_clips} clips, {self.n_skipped} skipped"]
        for reason, count in sorted(self.skipped.items()):
            shown = ", ".join(path for why, path in self.examples if why == reason)
            lines.append(f"  {count} x {reason}: {shown}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for run logs and checkpoint metadata)."""
        return {
            "corpus": self.corpus,
            "root": str(self.root),
            "n_clips": self.n_clips,
            "n_ignored": self.n_ignored,
            "skipped": dict(self.skipped),
            "examples": [list(pair) for pair in self.examples],
            "notes": list(self.notes),
        }


class OddFile(Exception):
    """Raised by a name parser or header check; `args[0]` is the reason the file is skipped."""


@dataclass
class Context:
    """The state of one `load_corpus` call: options and the running skip counts."""

    corpus: str
    root: Path
    check_audio: bool
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_ignored: int = 0

    def skip(self, path: Path, reason: str) -> None:
        """Count a skipped file, keeping its path as an example for the first few of each reason."""
        self.skipped[reason] += 1
        if self.skipped[reason] <= N_EXAMPLES_PER_REASON:
            self.examples.append((reason, relative_path(path, self.root)))

    def report(self, n_clips: int) -> LoadReport:
        """The frozen report of this call."""
        return LoadReport(
            corpus=self.corpus,
            root=self.root,
            n_clips=n_clips,
            n_ignored=self.n_ignored,
            skipped=dict(self.skipped),
            examples=tuple(self.examples),
            notes=tuple(self.notes),
        )


NameParser = Callable[[Path, Path], tuple[str, str]]
"""(path, root) -> (vocabulary label, speaker without corpus prefix); raises `OddFile`."""

Loader = Callable[["CorpusFormat", Context], list[Clip]]
"""(format, context) -> clips, counting skipped files in the context."""


@dataclass(frozen=True, slots=True)
class CorpusFormat:
    """A corpus layout: how to read one file's name, and how to load a whole tree."""

    name: str
    layout: str
    parse: NameParser | None
    """Reads one audio file's label and speaker; None when names alone say nothing (csv)."""
    load: Loader


# ---------------------------------------------------------------- files and headers


@cache
def audio_suffixes() -> frozenset[str]:
    """Lower-case file suffixes of formats soundfile reads (`.wav`, `.flac`, `.aiff`, ...)."""
    formats = {f".{name.lower()}" for name in sf.available_formats()} - {".raw"}
    return frozenset(formats | {".aif", ".aifc", ".oga", ".opus", ".wave", ".snd"})


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to `root` when it lies under it, else as given."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def list_audio(root: Path) -> tuple[list[Path], list[Path], int]:
    """(audio files, hidden audio files like `._x.wav`, count of other files) under `root`, sorted.

    Files inside hidden folders (`.git`, `.cache`) are not looked at.
    """
    audio: list[Path] = []
    hidden: list[Path] = []
    n_other = 0
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts[:-1]) or not path.is_file():
            continue
        if path.suffix.lower() not in audio_suffixes():
            n_other += 1
        elif path.name.startswith("."):
            hidden.append(path)
        else:
            audio.append(path)
    return audio, hidden, n_other


def check_header(path: Path) -> None:
    """Raise `OddFile` unless soundfile can read the file's header and it holds some frames."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise OddFile(BAD_AUDIO) from err
    if info.frames <= 0:
        raise OddFile(EMPTY_AUDIO)


def make_clip(ctx: Context, path: Path, label: str, speaker: str) -> Clip | None:
    """The clip for a parsed file, or None (counted) when its audio header is bad."""
    if ctx.check_audio:
        try:
            check_header(path)
        except OddFile as odd:
            ctx.skip(path, odd.args[0])
            return None
    return Clip(path=path, label=label, speaker=f"{ctx.corpus}:{speaker}", corpus=ctx.corpus)


def load_files(ctx: Context, parse: NameParser) -> list[Clip]:
    """Parse every audio file under the root with `parse`, counting the ones that do not fit."""
    audio, hidden, n_other = list_audio(ctx.root)
    ctx.n_ignored += n_other
    for path in hidden:
        ctx.skip(path, HIDDEN_FILE)
    clips: list[Clip] = []
    for path in audio:
        try:
            label, speaker = parse(path, ctx.root)
        except OddFile as odd:
            ctx.skip(path, odd.args[0])
            continue
        clip = make_clip(ctx, path, label, speaker)
        if clip is not None:
            clips.append(clip)
    return clips


def load_named(fmt: CorpusFormat, ctx: Context) -> list[Clip]:
    """The default loader: every label and speaker comes from the file's own name."""
    assert fmt.parse is not None, f"{fmt.name} has no name parser"
    return load_files(ctx, fmt.parse)
