"""The reference-style pipeline as a WebSocket server: per stream, per window, librosa log-mel then eager PyTorch.

This is how the reference projects (docs: /work/shared/REFERENCES.md) would serve the same model if
they streamed: every window is recomputed from its 5 s of audio with ``librosa.feature.melspectrogram``
and ``librosa.power_to_db``, and classified alone (batch 1) by the eager ``nn.Module``; no batching, no
incremental features, no VAD, one window at a time in one worker thread (FIFO across streams). It
speaks the same ingest protocol as ``emostream serve`` (``streamer.server.protocol``, ``streamer.core.events``), so
the benchmark's load generator drives both unchanged, and it loads the same model file, so its
estimates equal ours up to feature rounding (``reference_log_mel`` equals ``models.features.log_mel``).

Run: ``python -m benchmarks.baseline --port 8765 --model default [--hop-s 1.0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from emostream.models.features import FeatureConfig
from emostream.models.modelfile import Classifier, load_classifier
from emostream.models.windows import fit_window
from emostream.streamer.core.events import ErrorEvent, Estimate, ReadyEvent
from emostream.streamer.core.resample import StreamResampler
from emostream.streamer.core.windower import Windower
from emostream.streamer.server.protocol import ProtocolError, StartMessage, decode_audio, parse_control

MAX_MESSAGE_BYTES = 1 << 20


def reference_log_mel(window: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """One window ``(S,)`` -> ``(n_rows, frames)`` the way the reference projects compute it (librosa).

    ``melspectrogram`` (Slaney mels, power 2) then ``power_to_db`` with ``ref=1``, ``amin=log_floor``
    and no ``top_db`` clipping, rescaled from dB to the model's unit when it expects natural log;
    ``center=False`` so the frames are the model's frames. The mel filterbank is rebuilt on every
    call, as ``librosa.feature.melspectrogram`` does. With ``cfg.pitch`` the two pitch rows follow,
    from ``models.features.pitch_rows`` on the same window (librosa has no equivalent of them).
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(window, dtype=np.float32),
        sr=cfg.sample_rate_hz,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_samples,
        win_length=cfg.stft_win_samples,
        window="boxcar" if cfg.window == "rectangular" else cfg.window,
        center=False,
        power=2.0,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min_hz,
        fmax=cfg.f_max_hz,
    )
    db = librosa.power_to_db(mel, ref=1.0, amin=cfg.log_floor, top_db=None)
    if cfg.log_kind == "ln":
        db = db * (math.log(10.0) / 10.0)
    db = np.asarray(db, dtype=np.float32)
    if not cfg.pitch:
        return db
    import torch

    from emostream.models.features import pitch_rows

    with torch.inference_mode():
        wave = torch.from_numpy(np.asarray(window, dtype=np.float32))[None]
        pitch = pitch_rows(wave, cfg.sample_rate_hz, cfg.n_fft, cfg.hop_samples)[0].numpy()
    return np.concatenate([db, pitch], axis=0)


@dataclass(slots=True)
class _Job:
    stream: _Stream
    seq: int
    end_sample: int
    window: np.ndarray  # (window_samples,) float32
    arrived_s: float  # perf_counter when the window's last sample arrived


@dataclass(slots=True)
class _Stream:
    """One connection's audio history (at most a window and a step kept) and its outgoing messages.

    Which windows are due is the streamer's own policy (``streamer.core.windower.Windower``).
    """

    stream_id: str
    window_samples: int
    hop_samples: int
    outbox: asyncio.Queue[str | None]
    buf: np.ndarray = field(init=False)
    windower: Windower = field(init=False)
    fill: int = 0
    total_samples: int = 0
    seq: int = 0
    pending: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.buf = np.zeros(2 * self.window_samples, dtype=np.float32)
        self.windower = Windower(self.window_samples, self.hop_samples)
        self.idle.set()

    def _append(self, chunk: np.ndarray) -> None:
        n = chunk.shape[0]
        if self.fill + n > self.buf.shape[0]:
            keep = min(self.fill, self.window_samples)
            self.buf[:keep] = self.buf[self.fill - keep : self.fill]
            self.fill = keep
        self.buf[self.fill : self.fill + n] = chunk
        self.fill += n
        self.total_samples += n

    def window(self, end_sample: int) -> np.ndarray:
        """The window ending at ``end_sample`` (at most one step back: the buffer holds it)."""
        stop = self.fill - (self.total_samples - end_sample)
        return fit_window(self.buf[max(0, stop - self.window_samples) : stop], self.window_samples)

    def push(self, mono: np.ndarray, arrived_s: float) -> list[_Job]:
        """Append audio; a job for every window end (every hop) the chunk reaches."""
        jobs = []
        for pos in range(0, mono.shape[0], self.window_samples):  # steps of at most a window
            step = mono[pos : pos + self.window_samples]
            self._append(step)
            jobs += [self._job(end, arrived_s) for end in self.windower.push(step.shape[0])]
        return jobs

    def flush(self, arrived_s: float) -> list[_Job]:
        """The final window at the last sample when the stream stopped between two hops."""
        return [self._job(end, arrived_s) for end in self.windower.flush()]

    def _job(self, end_sample: int, arrived_s: float) -> _Job:
        job = _Job(self, self.seq, end_sample, self.window(end_sample), arrived_s)
        self.seq += 1
        self.pending += 1
        self.idle.clear()
        return job


class ReferenceServer:
    """The reference-style pipeline behind the ingest protocol; one worker thread runs every window."""

    def __init__(self, classifier: Classifier, hop_s: float) -> None:
        self.clf = classifier
        self.cfg = classifier.feature_config
        self.hop_samples = round(hop_s * self.cfg.sample_rate_hz)
        if self.hop_samples <= 0:
            raise ValueError(f"hop_s must be positive, got {hop_s}")
        self.hop_s = hop_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ids = itertools.count(1)
        self.active: set[str] = set()

    # ---- worker thread: the reference-style computation, one window at a time ------------------

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            probs = self.clf.predict(reference_log_mel(job.window, self.cfg)[None])[0]
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._deliver, job, probs)

    def _deliver(self, job: _Job, probs: np.ndarray) -> None:
        sr = self.cfg.sample_rate_hz
        named = {label: float(p) for label, p in zip(self.clf.labels, probs, strict=True)}
        best = int(np.argmax(probs))
        est = Estimate(
            stream=job.stream.stream_id,
            seq=job.seq,
            t_start_s=max(0, job.end_sample - self.cfg.window_samples) / sr,
            t_end_s=job.end_sample / sr,
            label=self.clf.labels[best],
            confidence=float(probs[best]),
            probs=named,
            raw_probs=named,
            speech=True,
            speech_prob=1.0,
            latency_ms=(time.perf_counter() - job.arrived_s) * 1e3,
            model=self.clf.name,
            dropped_samples=0,
        )
        job.stream.outbox.put_nowait(est.to_json())
        job.stream.pending -= 1
        if job.stream.pending == 0:
            job.stream.idle.set()

    # ---- connections -------------------------------------------------------------------------

    async def _sender(self, ws, outbox: asyncio.Queue[str | None]) -> None:  # type: ignore[no-untyped-def]
        while (msg := await outbox.get()) is not None:
            await ws.send(msg)

    async def handle(self, ws) -> None:  # type: ignore[no-untyped-def]
        try:
            first = await ws.recv()
            if isinstance(first, bytes):
                raise ProtocolError("no_start", "send a start message before audio")
            start = parse_control(first)
            if not isinstance(start, StartMessage):
                raise ProtocolError("no_start", "send a start message before stop")
        except ProtocolError as exc:
            await ws.send(ErrorEvent(exc.code, exc.message).to_json())
            await ws.close(exc.close_code, exc.code)
            return
        stream_id = start.stream or f"stream-{next(self.ids)}"
        if stream_id in self.active:
            await ws.send(ErrorEvent("stream_in_use", f"stream {stream_id!r} is in use", stream_id).to_json())
            await ws.close(1008, "stream_in_use")
            return
        self.active.add(stream_id)
        sr = self.cfg.sample_rate_hz
        resampler = StreamResampler(start.sample_rate_hz, sr, 1) if start.sample_rate_hz != sr else None
        outbox: asyncio.Queue[str | None] = asyncio.Queue()
        state = _Stream(stream_id, self.cfg.window_samples, self.hop_samples, outbox)
        sender = asyncio.create_task(self._sender(ws, outbox))
        ready = ReadyEvent(stream_id, self.clf.labels, sr, self.clf.name, self.cfg.window_s, self.hop_s)
        outbox.put_nowait(ready.to_json())
        try:
            async for msg in ws:
                arrived_s = time.perf_counter()
                if isinstance(msg, str):
                    parse_control(msg)  # stop (a second start raises)
                    break
                frames = decode_audio(msg, start)  # (n, channels)
                mono = frames[:, 0] if start.channels == 1 else frames.mean(axis=1, dtype=np.float32)
                if resampler is not None:
                    mono = resampler.process(mono)
                for job in state.push(np.ascontiguousarray(mono, dtype=np.float32), arrived_s):
                    self.jobs.put(job)
            for job in state.flush(time.perf_counter()):
                self.jobs.put(job)
            await state.idle.wait()
            end = {"type": "end", "stream": stream_id, "received_frames": state.total_samples,
                   "throttled_frames": 0, "estimates": state.seq, "dropped_messages": 0}
            outbox.put_nowait(json.dumps(end, separators=(",", ":")))
            outbox.put_nowait(None)
            await sender
            await ws.close()
        except ProtocolError as exc:
            outbox.put_nowait(ErrorEvent(exc.code, exc.message, stream_id).to_json())
            outbox.put_nowait(None)
            await sender
            await ws.close(exc.close_code, exc.code)
        except Exception:  # the client went away: let the worker finish this stream's jobs
            sender.cancel()
        finally:
            self.active.discard(stream_id)

    async def serve(self, host: str, port: int) -> None:
        from websockets.asyncio.server import serve

        self.loop = asyncio.get_running_loop()
        worker = threading.Thread(target=self._work, name="reference-worker", daemon=True)
        worker.start()
        async with serve(self.handle, host, port, max_size=2 * MAX_MESSAGE_BYTES, compression=None,
                         ping_interval=None) as server:
            bound = next(iter(server.sockets)).getsockname()[1]
            print(f"baseline: listening on ws://{host}:{bound} ({self.clf.name}, eager, librosa)",
                  file=sys.stderr, flush=True)
            await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.baseline",
        description="The reference-style pipeline (librosa log-mel + eager PyTorch, one window at a time, "
        "no batching) behind emostream's ingest protocol, for the benchmark's baseline.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766, help="port (0: any free port; the chosen one is printed)")
    p.add_argument("--model", default="default", help="model directory or file, or 'default' / 'fast'")
    p.add_argument("--hop-s", type=float, default=1.0, help="seconds between windows of a stream (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the model; librosa always runs on the CPU)")
    args = p.parse_args(argv)
    clf = load_classifier(args.model, backend="eager", device=args.device)
    try:
        asyncio.run(ReferenceServer(clf, args.hop_s).serve(args.host, args.port))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
