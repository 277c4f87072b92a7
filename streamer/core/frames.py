"""Incremental log-mel per stream: each hop computes only the new frames, into a ring of the window's frames.

Frames are taken with ``center=False`` on a grid fixed by the stream's windows: the window ending
at absolute sample ``e`` has frames starting at ``e - window_samples + j * frame_hop`` for
``j < n_frames``. When hops are a multiple of the feature hop (``FeatureConfig.hop_frames``), every
window of a stream shares that grid, so the next window needs only the frames that start at or
after ``next_frame_sample`` (the first grid frame not yet computed): the audio
``[next_frame_sample, e)`` (the new hop plus a tail of ``n_fft - frame_hop`` samples of old audio).

Two ways to produce a window, and the rule that picks one (``StreamFrames.request``):

- **scratch**: ``LogMel(fit_window(audio[max(0, e - W):e]))``, the reference computation itself
  (``models.windows.fit_window`` is THE padding policy), except that frames lying wholly in a
  start-up window's zero padding are filled with the log-mel of silence instead of computed. Used for start-up windows (``e < W``,
  zeros before the audio: frames straddling the zero/audio boundary come out exactly as training
  computes them), for a window off the grid (the flush window at the last sample), and after a
  gap (history overwritten or missing). Its frames that start at or after sample 0 are grid frames
  of real audio only, so they seed the ring for the incremental steps that follow.
- **incremental**: the ring's held frames plus the new ones; equal to scratch up to float rounding
  (``tests/test_frames.py`` checks 1e-5 at every window end for random chunkings).

``IncrementalLogMel.compute`` takes one request per stream and batches them: all scratch windows in
one ``log_mel`` call, incremental segments in one call per segment length (the same for every
stream in the steady state). No I/O: the caller reads the requested audio (e.g. from its
``RingBuffer``) and passes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emostream.models.features import FeatureConfig, LogMel
from emostream.models.windows import fit_window


class FrameRing:
    """The newest ``n_frames`` log-mel frames of one stream, preallocated ``(n_mels, n_frames)``."""

    def __init__(self, n_mels: int, n_frames: int) -> None:
        if n_mels <= 0 or n_frames <= 0:
            raise ValueError(f"n_mels and n_frames must be positive, got {n_mels}, {n_frames}")
        self.n_mels = n_mels
        self.n_frames = n_frames
        self._buf = np.zeros((n_mels, n_frames), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._write_pos = 0  # column the next frame goes to
        self._count = 0  # frames held (<= n_frames)

    @property
    def count(self) -> int:
        """Frames held (at most ``n_frames``)."""
        return self._count

    def push(self, frames: np.ndarray) -> None:
        """Append ``(n_mels, k)`` frames, oldest first; only the newest ``n_frames`` are kept."""
        if frames.ndim != 2 or frames.shape[0] != self.n_mels:
            raise ValueError(f"expected frames of shape ({self.n_mels}, k), got {frames.shape}")
        k = int(frames.shape[1])
        if k == 0:
            return
        if k > self.n_frames:
            frames = frames[:, k - self.n_frames :]
            k = self.n_frames
        pos = self._write_pos
        first = min(k, self.n_frames - pos)
        self._buf[:, pos : pos + first] = frames[:, :first]
        if first < k:
            self._buf[:, : k - first] = frames[:, first:]
        self._write_pos = (pos + k) % self.n_frames
        self._count = min(self.n_frames, self._count + k)

    def last(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy of the newest ``n`` frames ``(n_mels, n)``, oldest first (``n <= count``)."""
        if not 0 <= n <= self._count:
            raise ValueError(f"asked for the last {n} frames, the ring holds {self._count}")
        dest = np.empty((self.n_mels, n), dtype=np.float32) if out is None else out
        start = (self._write_pos - n) % self.n_frames
        first = min(n, self.n_frames - start)
        dest[:, :first] = self._buf[:, start : start + first]
        if first < n:
            dest[:, first:n] = self._buf[:, : n - first]
        return dest


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """The audio one window needs: absolute samples ``[start_sample, end_sample)``.

    ``incremental`` is False for a scratch window (audio of the whole window, or of the stream so
    far at start-up), True when only the new grid frames are computed from it.
    """

    end_sample: int
    start_sample: int
    incremental: bool

    @property
    def n_samples(self) -> int:
        return self.end_sample - self.start_sample


class StreamFrames:
    """One stream's incremental log-mel state: a ``FrameRing`` and the next grid frame's start sample."""

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.window_samples = cfg.window_samples
        self.n_frames = cfg.n_frames
        self.ring = FrameRing(cfg.n_rows, cfg.n_frames)
        self.reset()

    def reset(self) -> None:
        self.ring.reset()
        self._next_frame_sample = 0  # start of the first grid frame not computed yet
        self._valid = False  # False until a scratch window has fixed the grid

    @property
    def next_frame_sample(self) -> int:
        return self._next_frame_sample

    def _oldest_held_sample(self) -> int:
        return self._next_frame_sample - self.ring.count * self.cfg.hop_samples

    def request(self, end_sample: int) -> FrameRequest:
        """Which audio the window ending at ``end_sample`` needs, scratch or incremental (see module doc)."""
        if end_sample <= 0:
            raise ValueError(f"a window must end after sample 0, got end_sample={end_sample}")
        first_frame = end_sample - self.window_samples  # start of the window's first frame
        incremental = (
            self._valid
            and first_frame >= 0
            and (self._next_frame_sample - first_frame) % self.cfg.hop_samples == 0
            and self._oldest_held_sample() <= first_frame <= self._next_frame_sample
            and end_sample >= self._next_frame_sample
        )
        if incremental:
            return FrameRequest(end_sample, self._next_frame_sample, True)
        return FrameRequest(end_sample, max(0, first_frame), False)


class IncrementalLogMel:
    """Computes windows for many streams at once with the shared ``models.features.LogMel``."""

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.logmel = LogMel(cfg).eval()
        # A frame of zeros through the same LogMel: what every frame wholly inside the zero
        # padding of a start-up window comes to, bit for bit.
        self._silence: np.ndarray = self._batch([np.zeros(cfg.n_fft, dtype=np.float32)])[0, :, 0].copy()

    def _silent_frames(self, n_audio: int) -> int:
        """Leading frames of a scratch window over ``n_audio`` samples that see only padding zeros.

        A start-up window (``n_audio < window_samples``) has ``pad = window_samples - n_audio``
        zeros first; frame ``j`` (samples ``[j*hop, j*hop + n_fft)``) is all zeros when
        ``j*hop + n_fft <= pad``. Those are not computed: 1 s into a stream, 393 of 497 frames.
        """
        pad = self.cfg.window_samples - n_audio
        if pad < self.cfg.n_fft:
            return 0
        return min(self.cfg.n_frames - 1, (pad - self.cfg.n_fft) // self.cfg.hop_samples + 1)

    @torch.inference_mode()
    def _batch(self, waves: list[np.ndarray]) -> np.ndarray:
        """``n x (S,)`` equal-length audio -> ``(n, n_mels, frames_for(S))``."""
        x = torch.from_numpy(np.stack(waves).astype(np.float32, copy=False))
        return self.logmel(x).numpy()

    def compute(
        self,
        states: Sequence[StreamFrames],
        requests: Sequence[FrameRequest],
        audios: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """One window per stream: ``(n_mels, n_frames)`` float32 each, and each state advanced.

        ``audios[i]`` is the stream's audio ``[requests[i].start_sample, requests[i].end_sample)``
        (what ``states[i].request(end)`` asked for). Each state may appear once per call.
        """
        if not len(states) == len(requests) == len(audios):
            raise ValueError("states, requests and audios must have the same length")
        if len({id(s) for s in states}) != len(states):
            raise ValueError("a stream may have only one window per compute() call")
        for req, audio in zip(requests, audios, strict=True):
            if audio.shape != (req.n_samples,):
                raise ValueError(f"request needs {req.n_samples} samples, got audio of shape {audio.shape}")
        out: list[np.ndarray | None] = [None] * len(states)
        cfg = self.cfg
        scratch_by_skip: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            if not r.incremental:
                scratch_by_skip.setdefault(self._silent_frames(r.n_samples), []).append(i)
        for skip, idx in scratch_by_skip.items():
            fitted = [fit_window(audios[i], cfg.window_samples)[skip * cfg.hop_samples :] for i in idx]
            feats = self._batch(fitted)  # (n, n_mels, n_frames - skip)
            for row, i in enumerate(idx):
                window = np.empty((cfg.n_rows, cfg.n_frames), dtype=np.float32)
                window[:, :skip] = self._silence[:, None]
                window[:, skip:] = feats[row]
                out[i] = window
                self._seed(states[i], requests[i], window)
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            if r.incremental:
                by_length.setdefault(r.n_samples, []).append(i)
        for n_samples, idx in by_length.items():
            n_new = cfg.frames_for(n_samples)
            new_frames = self._batch([audios[i] for i in idx]) if n_new else None
            for row, i in enumerate(idx):
                state = states[i]
                if new_frames is not None:
                    state.ring.push(new_frames[row])
                state._next_frame_sample += n_new * cfg.hop_samples
                out[i] = state.ring.last(state.n_frames)
        return [w for w in out if w is not None]

    def _seed(self, state: StreamFrames, req: FrameRequest, window: np.ndarray) -> None:
        """After a scratch window: keep its frames of real audio (start >= 0) as the grid's history."""
        cfg = self.cfg
        first_frame = req.end_sample - state.window_samples
        skip = max(0, -(first_frame // cfg.hop_samples)) if first_frame < 0 else 0  # frames starting before 0
        state.ring.reset()
        if skip < state.n_frames:
            state.ring.push(window[:, skip:])
        state._next_frame_sample = first_frame + state.n_frames * cfg.hop_samples
        state._valid = True

    def window(
        self, state: StreamFrames, end_sample: int, read: Callable[[int, int], np.ndarray]
    ) -> np.ndarray:
        """One stream, one window: ``read(start, end)`` returns that stream's audio ``[start, end)``."""
        req = state.request(end_sample)
        return self.compute([state], [req], [read(req.start_sample, req.end_sample)])[0]
