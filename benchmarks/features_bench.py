"""Feature throughput: whole-window log-mel (batched), incremental per-hop log-mel, and librosa per window.

Every figure is seconds of audio per wall-clock second ("x real time") for the audio each call
covers: a whole window counts ``window_s`` seconds, an incremental hop counts ``hop_s`` seconds (the
new audio). ``streams_at_hop`` converts to real-time streams at the benchmark's hop, which is what
matters when every stream needs one window per hop: a whole-window computation redoes
``window_s / hop_s`` times more work per stream than the incremental one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emostream.benchmarks.baseline import reference_log_mel
from emostream.benchmarks.machine import Repeats, percentiles_ms, time_calls
from emostream.models.features import FeatureConfig, LogMel


def _audio(seconds: float, sample_rate_hz: int, seed: int = 0) -> np.ndarray:
    """Seeded noise with a speech-like level (about -20 dBFS)."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(round(seconds * sample_rate_hz))).astype(np.float32)


def _row(name: str, times: list[float], audio_s_per_call: float, hop_s: float, window_s: float,
         per_call: str, batch: int) -> dict[str, Any]:
    stats = percentiles_ms(times)
    audio_s_per_s = audio_s_per_call / (stats["p50_ms"] / 1e3)
    # real-time streams: each stream needs per hop either one whole window or one hop of new audio
    per_stream_hop_s = window_s if per_call == "window" else hop_s
    return {
        "name": name,
        "batch": batch,
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "repeats": stats["n"],
        "audio_s_per_s": audio_s_per_s,
        "streams_at_hop": audio_s_per_s / per_stream_hop_s * hop_s,
    }


def _incremental(cfg: FeatureConfig, hop_s: float, batch: int, quick: bool) -> tuple[str, list[float]]:
    """Steady-state per-hop log-mel of ``batch`` streams: ``streamer.core.frames`` when present, else
    ``models.features.log_mel`` on one hop of new frames (the hop plus ``n_fft - hop`` samples of context)."""
    hop_samples = round(hop_s * cfg.sample_rate_hz)
    reps = Repeats.pick(quick, full=(30, 2000, 2.0))
    audio = _audio(cfg.window_s + hop_s, cfg.sample_rate_hz, seed=1)
    try:
        from emostream.streamer.core import frames
    except ImportError:
        frames = None  # type: ignore[assignment]
    if frames is not None:
        IncrementalLogMel, StreamFrames = frames.IncrementalLogMel, frames.StreamFrames  # noqa: N806
        inc = IncrementalLogMel(cfg)
        states = [StreamFrames(cfg) for _ in range(batch)]
        end = cfg.window_samples
        reqs = [s.request(end) for s in states]
        inc.compute(states, reqs, [audio[r.start_sample : r.end_sample] for r in reqs])  # scratch: seeds the grid
        # the content does not change the cost: one slice of the requested length serves every step

        def step() -> None:
            nonlocal end
            end += hop_samples
            rq = [s.request(end) for s in states]
            if not all(r.incremental for r in rq):
                raise RuntimeError(f"streamer.core.frames did not take the incremental path: {rq[0]}")
            inc.compute(states, rq, [audio[: r.n_samples] for r in rq])

        return "streamer.frames.IncrementalLogMel", time_calls(step, reps)
    logmel = LogMel(cfg).eval()
    n = hop_samples + cfg.n_fft - cfg.hop_samples
    x = torch.from_numpy(np.stack([audio[i * 7 : i * 7 + n] for i in range(batch)]))

    def one() -> None:
        with torch.inference_mode():
            logmel(x)

    return "models.features.log_mel on one hop of new frames", time_calls(one, reps)


def run_features(*, hop_s: float, quick: bool, batch: int = 32,
                 thread_counts: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """The three feature paths on the CPU (the streamer computes features on the CPU), with torch
    limited to each of ``thread_counts`` threads in turn (librosa/numpy FFTs are single-threaded)."""
    default_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for row in _run_features(hop_s=hop_s, quick=quick, batch=batch, with_librosa=threads == thread_counts[0]):
                row["threads"] = threads if "librosa" not in row["name"] else 1
                rows.append(row)
    finally:
        torch.set_num_threads(default_threads)
    return {"hop_s": hop_s, "window_s": FeatureConfig().window_s, "rows": rows}


def _run_features(*, hop_s: float, quick: bool, batch: int, with_librosa: bool) -> list[dict[str, Any]]:
    cfg = FeatureConfig()
    torch_reps = Repeats.pick(quick)
    rows: list[dict[str, Any]] = []
    logmel = LogMel(cfg).eval()
    windows = torch.from_numpy(_audio(cfg.window_s * batch, cfg.sample_rate_hz).reshape(batch, -1))

    def whole() -> None:
        with torch.inference_mode():
            logmel(windows)

    rows.append(_row("whole-window LogMel (batched)", time_calls(whole, torch_reps), batch * cfg.window_s,
                     hop_s, cfg.window_s, "window", batch))
    for b in (1, batch):
        impl, times = _incremental(cfg, hop_s, b, quick)
        rows.append(_row(f"incremental per-hop log-mel ({impl})", times, b * hop_s, hop_s, cfg.window_s, "hop", b))
    pitch = FeatureConfig(pitch=True)  # the log-mel and the two pitch rows (models.features.pitch_rows)
    pitch_logmel = LogMel(pitch).eval()

    def whole_pitch() -> None:
        with torch.inference_mode():
            pitch_logmel(windows)

    rows.append(_row("whole-window LogMel + pitch rows (batched)", time_calls(whole_pitch, torch_reps),
                     batch * cfg.window_s, hop_s, cfg.window_s, "window", batch))
    impl, times = _incremental(pitch, hop_s, batch, quick)
    rows.append(_row(f"incremental per-hop log-mel + pitch rows ({impl})", times, batch * hop_s, hop_s,
                     cfg.window_s, "hop", batch))
    if with_librosa:
        one_window = _audio(cfg.window_s, cfg.sample_rate_hz, seed=2)
        times = time_calls(lambda: reference_log_mel(one_window, cfg),
                           Repeats.pick(quick, warmup=2, full=(10, 300, 3.0), smoke=(3, 20, 0.3)))
        rows.append(_row("librosa melspectrogram + power_to_db per window (reference)", times, cfg.window_s,
                         hop_s, cfg.window_s, "window", 1))
    return rows
