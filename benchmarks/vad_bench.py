"""The ``vad`` stage: CPU per stream-second of the speech gate, and how often a silero stride agrees with stride 1.

Streams of speech with pauses (slices of the demo clip between pauses of faint noise, each stream
at its own offset) go through ``streamer.core.vad.Vad`` hop by hop as the server runs it: each hop
every stream's window is due, and the windows are processed in batches of at most
``BatchConfig().max_batch`` (the runtime's batches), one ``Vad.process`` and one ``decide`` each.
The figure is the calling thread's CPU time (ONNX Runtime runs silero on that one thread) per
stream per second of audio, at 1, 16 and 128 streams, for the energy gate and for silero at each
stride (with the default floor, ``VadConfig.silero_floor_dbfs``: chunks quieter than it skip silero)
and for silero on every chunk without the floor, the reference. Agreement: the share of windows
whose speech decision equals the reference's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from emostream.benchmarks.loadgen import DEMO_CLIP
from emostream.benchmarks.machine import percentiles_ms
from emostream.streamer.core.batcher import BatchConfig
from emostream.streamer.core.vad import Vad, VadConfig, VadState
from emostream.streamer.runtime.silero import make_vad

SAMPLE_RATE_HZ = 16000
STREAM_COUNTS = (1, 16, 128)
STRIDES = (1, 2, 4, 8)
PAUSE_DBFS = -70.0


def speech_with_pauses(seconds: float, seed: int) -> np.ndarray:
    """``seconds`` of 16 kHz audio: demo-clip slices of 0.3-2 s between pauses of 0.3-2.5 s of faint noise."""
    import soundfile as sf

    clip, rate = sf.read(str(DEMO_CLIP), dtype="float32", always_2d=False)
    if rate != SAMPLE_RATE_HZ:
        raise RuntimeError(f"{DEMO_CLIP} should be {SAMPLE_RATE_HZ} Hz, found {rate}")
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE_HZ)
    out = (10 ** (PAUSE_DBFS / 20) * rng.standard_normal(n)).astype(np.float32)
    pos = 0
    while pos < n:
        pos += round(rng.uniform(0.3, 2.5) * SAMPLE_RATE_HZ)  # a pause
        length = min(n - pos, round(rng.uniform(0.3, 2.0) * SAMPLE_RATE_HZ))
        if length <= 0:
            break
        start = int(rng.integers(0, len(clip) - length))
        out[pos : pos + length] += clip[start : start + length]
        pos += length
    return out


def _run(vad: Vad, audios: list[np.ndarray], hop_samples: int, max_batch: int) -> tuple[list[float], list[bool]]:
    """Every stream's windows hop by hop in batches of ``max_batch``: CPU seconds per hop, decisions."""
    states: list[VadState] = [vad.new_state() for _ in audios]
    cpu_per_hop: list[float] = []
    decisions: list[bool] = []
    n_hops = min(len(a) for a in audios) // hop_samples
    for h in range(1, n_hops + 1):
        end = h * hop_samples
        t0 = time.thread_time()
        for b in range(0, len(audios), max_batch):
            batch = range(b, min(len(audios), b + max_batch))
            reqs = [vad.request(states[i], end) for i in batch]
            vad.process(
                [states[i] for i in batch],
                reqs,
                [audios[i][r.start_sample : r.end_sample] for i, r in zip(batch, reqs, strict=True)],
            )
            decisions += [vad.decide(states[i], end - hop_samples, end).speech for i in batch]
        cpu_per_hop.append(time.thread_time() - t0)
    return cpu_per_hop, decisions


def run_vad(hop_s: float = 1.0, quick: bool = False, seconds: float | None = None) -> dict[str, Any]:
    """Cost rows (method, stride, streams) and agreement rows (stride vs 1) for the report."""
    hop_samples = round(hop_s * SAMPLE_RATE_HZ)
    seconds = seconds or (4.0 if quick else 20.0)
    warmup_hops = 1
    max_batch = BatchConfig().max_batch
    default = VadConfig()
    counts = STREAM_COUNTS[:2] if quick else STREAM_COUNTS
    audios = [speech_with_pauses(seconds + warmup_hops * hop_s, seed=i) for i in range(max(counts))]
    reference = replace(default, method="silero", silero_stride_chunks=1, silero_floor_dbfs=None)
    variants = [("energy", replace(default, method="energy")), ("silero", reference)]
    variants += [("silero", replace(default, method="silero", silero_stride_chunks=k)) for k in STRIDES]
    rows: list[dict[str, Any]] = []
    decisions: dict[str, list[bool]] = {}
    for method, cfg in variants:
        vad = make_vad(cfg, SAMPLE_RATE_HZ, hop_samples)
        for n in counts:
            cpu, dec = _run(vad, audios[:n], hop_samples, max_batch)
            cpu = cpu[warmup_hops:]
            stats = percentiles_ms([c / n for c in cpu])  # per stream per hop
            ms_per_stream_s = float(sum(cpu)) * 1e3 / (n * len(cpu) * hop_s)
            rows.append({
                "method": method,
                "variant": _name(method, cfg),
                "stride_chunks": cfg.silero_stride_chunks if method == "silero" else 1,
                "floor_dbfs": cfg.silero_floor_dbfs if method == "silero" else None,
                "default": cfg == default,
                "streams": n,
                "batch": min(n, max_batch),
                "cpu_ms_per_stream_s": ms_per_stream_s,
                "p50_ms_per_stream_hop": stats["p50_ms"],
                "p99_ms_per_stream_hop": stats["p99_ms"],
                "hops": len(cpu),
                "cores_per_100_streams": ms_per_stream_s * 100 / 1e3,
            })
            if method == "silero" and n == max(counts):
                decisions[_name(method, cfg)] = dec
    ref = np.array(decisions[_name("silero", reference)])
    agreement = [
        {
            "variant": name,
            "windows": int(ref.size),
            "speech_share": float(np.mean(d)),
            "agreement_with_reference": float(np.mean(np.array(d) == ref)),
        }
        for name, d in decisions.items()
    ]
    return {
        "hop_s": hop_s,
        "seconds_per_stream": seconds,
        "max_batch": max_batch,
        "default_method": default.method,
        "default_stride_chunks": default.silero_stride_chunks,
        "default_variant": _name(default.method, default),
        "reference_variant": _name("silero", reference),
        "audio": "demo-clip slices of 0.3-2 s between 0.3-2.5 s pauses at -70 dBFS, one seed per stream",
        "rows": rows,
        "agreement": agreement,
    }


def _name(method: str, cfg: VadConfig) -> str:
    if method == "energy":
        return "energy"
    floor = "no floor" if cfg.silero_floor_dbfs is None else f"floor {cfg.silero_floor_dbfs:g} dBFS"
    return f"silero, stride {cfg.silero_stride_chunks}, {floor}"
