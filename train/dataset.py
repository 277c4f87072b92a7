"""Decoded-audio cache and the training / evaluation windows, built in the audio domain as the streamer sees them.

Audio cache
    Every clip is decoded once (soundfile), mixed to mono, resampled to the feature sample rate
    (soxr) and stored as int16 in one ``.npy`` per corpus and sample rate under the cache
    directory (default ``.cache/emostream/`` in the project), with a JSON index of offsets.
    The file name carries a hash of the clip list (paths, sizes, mtimes), so adding, removing or
    touching a file rebuilds that corpus's cache; later runs and epochs never open the audio files.

Windowing policy (the streamer's windows are the target; ``models.windows`` is THE padding policy)
    - Evaluation: a clip's windows are ``models.windows.stream_windows(audio, window_samples,
      hop)`` with the streamer's hop of ``EVAL_HOP_S`` = 1 s: windows end at 1 s, 2 s, ... and at
      the clip's last sample, each padded by ``fit_window`` (end-aligned, zeros before). The clip's
      prediction is the mean of its windows' probabilities.
    - Training: one window per training clip per epoch. With probability ``p_join`` the clip is
      joined with 1-2 other clips of the same speaker and label, separated by gaps of
      ``join_gap_s`` silence, so that windows look like live speech (5 s of continuous talk).
      Then speed perturbation (``train.augment``), then a random time shift: the window's end
      moves up to ``max_shift_s`` past the end of the audio (trailing silence, as after an
      utterance) or into it (the streamer's windows while the speaker is still talking); then
      ``fit_window`` places it, end-aligned exactly like the streamer's start-up windows
      (longer audio keeps its last ``window_samples``). Channel transforms (EQ, reverb, band limits)
      act on the clip's audio before placement; noise (never into the start-up zero padding), gain
      and bit depth act on the placed window (``train.augment``).
    - Sampling: with ``balance`` > 0 an epoch draws its windows with replacement so that each corpus
      gets a share proportional to ``n_clips ** (1 - balance)`` and, within a corpus, each speaker a
      share proportional to ``n_clips ** (1 - balance)`` (``balance=1``: every corpus and every
      speaker of it equally; 0: every clip once, shuffled).
    - Windows are featurised in batches by the shared ``models.features.LogMel``; SpecAugment
      masks the features of training batches only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emostream.models.features import FeatureConfig, LogMel
from emostream.models.windows import fit_window, stream_windows
from emostream.train.augment import Augmenter
from emostream.train.corpora import Clip
from emostream.train.perturb import active_rms

EVAL_HOP_S = 1.0
"""The streamer's default hop between windows; evaluation windows a clip exactly like that."""
CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "emostream"
INT16_SCALE = 32767.0


# ----------------------------------------------------------------------------- decoding and cache


def decode_clip(path: Path, sample_rate_hz: int) -> np.ndarray:
    """Mono float32 audio of one file at ``sample_rate_hz`` (soundfile decode, soxr resample)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise OSError(f"cannot decode {path}: {exc}") from None
    mono = audio.mean(axis=1)
    if sr != sample_rate_hz:
        mono = soxr.resample(mono, sr, sample_rate_hz, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _cache_key(clips: Sequence[Clip], sample_rate_hz: int) -> str:
    """A hash of the clip list (path, size, mtime) and the sample rate."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{sample_rate_hz}".encode())
    for clip in clips:
        st = os.stat(clip.path)
        h.update(f"\n{Path(clip.path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def progress_bar(console: Console | None = None, transient: bool = True) -> Progress:
    """The Rich progress bar used for decoding, training and evaluation."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def _build_corpus_cache(
    clips: Sequence[Clip], sample_rate_hz: int, npy: Path, index: Path, console: Console | None
) -> None:
    """Decode ``clips`` into one int16 array plus an offsets index (written atomically)."""
    parts: list[np.ndarray] = []
    with progress_bar(console) as progress:
        task = progress.add_task(f"decoding {clips[0].corpus} ({len(clips)} clips, once)", total=len(clips))
        for clip in clips:
            audio = decode_clip(clip.path, sample_rate_hz)
            parts.append(np.round(np.clip(audio, -1.0, 1.0) * INT16_SCALE).astype(np.int16))
            progress.advance(task)
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp_npy = npy.with_name(npy.name + f".{os.getpid()}.tmp")
    with open(tmp_npy, "wb") as fh:
        np.save(fh, np.concatenate(parts) if parts else np.zeros(0, np.int16))
    tmp_idx = index.with_name(index.name + f".{os.getpid()}.tmp")
    tmp_idx.write_text(
        json.dumps(
            {"paths": [str(c.path) for c in clips], "offsets": offsets, "sample_rate_hz": sample_rate_hz}
        )
    )
    tmp_npy.replace(npy)
    tmp_idx.replace(index)


def load_audio(
    clips: Sequence[Clip], sample_rate_hz: int, cache_dir: Path | None = None, console: Console | None = None
) -> list[np.ndarray]:
    """int16 mono audio of every clip at ``sample_rate_hz`` (views into memory-mapped cache files).

    One cache file per corpus; built on first use (with a progress bar), reused while the corpus's
    file list, sizes and mtimes are unchanged.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    by_corpus: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(clips):
        by_corpus[clip.corpus].append(i)
    out: list[np.ndarray] = [np.zeros(0, np.int16)] * len(clips)
    for corpus, indices in by_corpus.items():
        members = [clips[i] for i in indices]
        key = _cache_key(members, sample_rate_hz)
        stem = f"{corpus}-{sample_rate_hz}hz-{key}"
        npy, index = cache / f"{stem}.npy", cache / f"{stem}.json"
        if not (npy.is_file() and index.is_file()):
            _build_corpus_cache(members, sample_rate_hz, npy, index, console)
        data = np.load(npy, mmap_mode="r")
        offsets = json.loads(index.read_text())["offsets"]
        for j, i in enumerate(indices):
            out[i] = data[offsets[j] : offsets[j + 1]]
    return out


def to_float(audio: np.ndarray) -> np.ndarray:
    """int16 cache audio -> float32 in [-1, 1]."""
    return np.asarray(audio, dtype=np.float32) / INT16_SCALE


# ----------------------------------------------------------------------------- training windows


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """How a training window is cut from a clip (see the module docstring)."""

    p_join: float = 0.3
    """Probability that a window joins 2-3 clips of the same speaker and label."""
    join_gap_s: tuple[float, float] = (0.1, 0.6)
    """Silence between joined clips, drawn uniformly in this range."""
    max_shift_s: float = 1.0
    """The window end moves uniformly up to this far past or before the end of the audio."""
    p_shift: float = 0.7
    """Probability of a random time shift (otherwise the audio's end is the window's end)."""


class TrainWindows:
    """Training windows ``(B, window_samples)`` float32 with labels, built fresh (augmented) each epoch."""

    def __init__(
        self,
        audio: Sequence[np.ndarray],
        labels: Sequence[int] | np.ndarray,
        speakers: Sequence[str],
        feature_config: FeatureConfig,
        window_config: WindowConfig,
        augmenter: Augmenter,
        corpora: Sequence[str] | None = None,
        balance: float = 0.0,
    ) -> None:
        self.audio = audio
        self.labels = np.asarray(labels, dtype=np.int64)
        self.fc = feature_config
        self.wc = window_config
        self.augmenter = augmenter
        self.speakers = list(speakers)
        self.corpora = list(corpora) if corpora is not None else ["all"] * len(audio)
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, (spk, lab) in enumerate(zip(speakers, labels, strict=True)):
            groups[(spk, int(lab))].append(i)
        self.partners = [groups[(spk, int(lab))] for spk, lab in zip(speakers, labels, strict=True)]
        self.balance = float(balance)
        self.weights = sampling_weights(
            list(corpora) if corpora is not None else ["all"] * len(audio), list(speakers), self.balance
        )
        self.n_joined = 0
        self.n_shifted = 0

    def class_shares(self, n_classes: int) -> np.ndarray:
        """The expected share of each class among the sampled windows."""
        return np.bincount(self.labels, weights=self.weights, minlength=n_classes)

    def __len__(self) -> int:
        return len(self.audio)

    def segment(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Clip ``i``'s audio, joined with 1-2 same-speaker, same-label clips with probability ``p_join``."""
        audio = to_float(self.audio[i])
        others = [j for j in self.partners[i] if j != i]
        if not others or rng.random() >= self.wc.p_join:
            return audio
        n_more = int(rng.integers(1, 3))
        picks = [i, *rng.choice(others, size=min(n_more, len(others)), replace=False).tolist()]
        rng.shuffle(picks)
        sr = self.fc.sample_rate_hz
        pieces: list[np.ndarray] = []
        for k, j in enumerate(picks):
            if k:
                gap = int(rng.uniform(*self.wc.join_gap_s) * sr)
                pieces.append(np.zeros(gap, np.float32))
            pieces.append(audio if j == i else to_float(self.audio[j]))
        self.n_joined += 1
        return np.concatenate(pieces)

    def window(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """One augmented training window of clip ``i``."""
        audio = self.augmenter.channel(self.augmenter.speed(self.segment(i, rng), rng), rng)
        speech_rms = active_rms(audio, self.fc.sample_rate_hz)
        if rng.random() < self.wc.p_shift:
            shift = int(rng.uniform(-1.0, 1.0) * self.wc.max_shift_s * self.fc.sample_rate_hz)
            audio = time_shift(audio, shift, min_keep_samples=self.fc.sample_rate_hz // 2)
            self.n_shifted += 1
        win = fit_window(audio, self.fc.window_samples)
        start = max(0, self.fc.window_samples - len(audio))
        return self.augmenter.waveform(win, rng, start=start, speech_rms=speech_rms)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch: ``(waves (B, S) float32, labels (B,))`` batches (last one may be short); every clip
        once in shuffled order, or ``len(self)`` balanced draws (``balance`` > 0)."""
        for _, waves, labels in self.indexed_batches(batch_size, rng):
            yield waves, labels

    def indexed_batches(
        self, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``batches`` with each window's clip index first: ``(clips (B,), waves, labels)``."""
        if self.balance > 0:
            order = rng.choice(len(self), size=len(self), replace=True, p=self.weights)
        else:
            order = rng.permutation(len(self))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            waves = np.stack([self.window(int(i), rng) for i in idx])
            yield idx, waves, self.labels[idx]


def sampling_weights(corpora: Sequence[str], speakers: Sequence[str], balance: float) -> np.ndarray:
    """Per-clip draw probabilities (sum 1): corpus shares and, within a corpus, speaker shares each
    proportional to ``n_clips ** (1 - balance)``; a speaker's clips share its part equally."""
    n = len(corpora)
    if n == 0:
        return np.zeros(0)
    power = 1.0 - min(max(balance, 0.0), 1.0)
    by_corpus: dict[str, list[int]] = defaultdict(list)
    for i, corpus in enumerate(corpora):
        by_corpus[corpus].append(i)
    corpus_share = {c: len(ix) ** power for c, ix in by_corpus.items()}
    total = sum(corpus_share.values())
    weights = np.zeros(n)
    for corpus, members in by_corpus.items():
        by_speaker: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_speaker[speakers[i]].append(i)
        spk_share = {s: len(ix) ** power for s, ix in by_speaker.items()}
        spk_total = sum(spk_share.values())
        for spk, ix in by_speaker.items():
            weights[ix] = corpus_share[corpus] / total * spk_share[spk] / spk_total / len(ix)
    return weights / weights.sum()


def time_shift(audio: np.ndarray, shift_samples: int, min_keep_samples: int) -> np.ndarray:
    """Move the window's end relative to the audio: ``> 0`` appends that much silence after it,
    ``< 0`` cuts that much off its end (keeping at least ``min_keep_samples``)."""
    if shift_samples > 0:
        return np.concatenate([audio, np.zeros(shift_samples, np.float32)])
    if shift_samples < 0:
        keep = max(min(len(audio), min_keep_samples), len(audio) + shift_samples)
        return audio[:keep]
    return audio


# ----------------------------------------------------------------------------- evaluation windows


def clip_windows(audio: np.ndarray, feature_config: FeatureConfig, hop_s: float = EVAL_HOP_S) -> np.ndarray:
    """The streamer's windows of one clip: ``(n_windows, window_samples)`` float32."""
    hop = round(hop_s * feature_config.sample_rate_hz)
    _, windows = stream_windows(
        to_float(audio) if audio.dtype == np.int16 else audio, feature_config.window_samples, hop
    )
    return windows


class Featuriser:
    """Batched log-mel of windows with the shared ``LogMel`` (no gradient)."""

    def __init__(self, feature_config: FeatureConfig) -> None:
        self.logmel = LogMel(feature_config).eval()

    @torch.inference_mode()
    def __call__(self, waves: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.logmel(torch.as_tensor(waves, dtype=torch.float32))


def clip_probabilities(
    audio: Sequence[np.ndarray],
    predict: Callable[[torch.Tensor], np.ndarray],
    feature_config: FeatureConfig,
    batch_windows: int = 64,
    hop_s: float = EVAL_HOP_S,
    on_clips: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Per clip, the mean of its streamer windows' probabilities: ``(n_clips, n_classes)``.

    ``predict(logmel (B, n_mels, T)) -> probabilities (B, n_classes)``; the windows of consecutive
    clips are batched together (about ``batch_windows`` a batch); ``on_clips(n)`` reports progress.
    """
    feats = Featuriser(feature_config)
    out: list[np.ndarray] = []
    start = 0
    while start < len(audio):
        windows: list[np.ndarray] = []
        stop = start
        while stop < len(audio) and (stop == start or sum(len(w) for w in windows) < batch_windows):
            windows.append(clip_windows(audio[stop], feature_config, hop_s))
            stop += 1
        probs = np.asarray(predict(feats(np.concatenate(windows))), dtype=np.float32)  # (W, C)
        bounds = np.cumsum([0] + [len(w) for w in windows])
        out.extend(probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        if on_clips is not None:
            on_clips(stop - start)
        start = stop
    return np.stack(out) if out else np.zeros((0, 0), np.float32)
