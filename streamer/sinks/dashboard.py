"""Terminal dashboard: a frozen ``DashboardState``, a pure ``render(state)``, and the ``Dashboard`` sink around them.

``render`` is a pure function of the snapshot: the current label large with its confidence, a
bar per class, a timeline of the recent labels (one coloured letter per hop, ``·`` for no
speech), the input level in dBFS, speech/silence, latency p50/p99, dropped audio, and a table of
streams when there are several. ``Dashboard`` is a sink (``publish(Estimate)``, called on the
runtime's worker thread): it only updates its mutable state under a lock. A ``rich.live.Live`` redraws
``render(dashboard.snapshot())`` at its own rate (10 Hz by default), independent of inference.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from emostream.streamer.core.events import Estimate

BAR_WIDTH = 32
LEVEL_FLOOR_DBFS = -60.0
CLIP_SAMPLE = 0.999
"""A sample this close to full scale (or beyond) counts as clipped."""
CLIP_MIN_SAMPLES = 3
"""Clipped samples a block needs before the input line warns (one full-scale sample can be a click)."""
CLIP_HOLD_S = 3.0
"""How long the clipping warning stays after the last block that clipped."""
TIMELINE_HOPS = 30
LATENCY_HISTORY = 500
NO_SPEECH_MARK = "·"
KNOWN_COLOURS = {
    "neutral": "grey70",
    "calm": "cyan",
    "happy": "yellow",
    "sad": "blue",
    "angry": "red",
    "fearful": "magenta",
    "fear": "magenta",
    "disgust": "green",
    "surprised": "bright_magenta",
    "surprise": "bright_magenta",
}
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_green")


# ---- state ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamView:
    """What the dashboard shows of one stream."""

    stream: str
    seq: int = -1  # newest window's seq (-1: none yet)
    label: str | None = None
    confidence: float = 0.0
    probs: tuple[tuple[str, float], ...] = ()  # smoothed, in label order: the newest speech window's
    speech: bool = False
    speech_prob: float = 0.0
    t_end_s: float = 0.0
    latency_ms: float = 0.0
    dropped_samples: int = 0
    timeline: tuple[str | None, ...] = ()  # oldest first; None = no speech in that hop
    level_dbfs: float | None = None
    clipping: float = 0.0  # share of the samples at full scale in the last block that clipped (0: none lately)


@dataclass(frozen=True, slots=True)
class DashboardState:
    """A snapshot of everything ``render`` draws."""

    labels: tuple[str, ...]
    model: str
    source: str
    sample_rate_hz: int
    window_s: float
    hop_s: float
    streams: tuple[StreamView, ...] = ()
    focus: str | None = None  # stream shown large (None: the first)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    status: str = ""


# ---- pure rendering --------------------------------------------------------------------------------


def label_colour(label: str, labels: Sequence[str]) -> str:
    if label.lower() in KNOWN_COLOURS:
        return KNOWN_COLOURS[label.lower()]
    return PALETTE[list(labels).index(label) % len(PALETTE)] if label in labels else "white"


def label_letters(labels: Sequence[str]) -> dict[str, str]:
    """One distinct letter per label for the timeline: its first letter, else its next unused one."""
    out: dict[str, str] = {}
    for i, label in enumerate(labels):
        used = set(out.values())
        letter = next((ch for ch in label.upper() if ch.isalnum() and ch not in used), None)
        out[label] = letter if letter is not None else str(i % 10)
    return out


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text bar: ``fraction`` of ``width`` cells full (█), the rest light (░)."""
    f = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, fraction))
    full = round(f * width)
    return "█" * full + "░" * (width - full)


def _focus(state: DashboardState) -> StreamView | None:
    for view in state.streams:
        if view.stream == state.focus:
            return view
    return state.streams[0] if state.streams else None


def _headline(view: StreamView, labels: Sequence[str]) -> RenderableType:
    if view.seq < 0:
        return Panel(Text("waiting for the first window …", style="dim"), title=view.stream)
    if view.label is None:
        text = Text("  — no speech —  ", style="bold dim")
    else:
        colour = label_colour(view.label, labels)
        text = Text(f"  {view.label.upper()}  ", style=f"bold reverse {colour}")
        text.append(f"   {view.confidence:.0%}", style=f"bold {colour}")
    return Panel(
        text, title=view.stream, subtitle=f"window #{view.seq} ending at {view.t_end_s:.1f} s", padding=(1, 2)
    )


def _bars(view: StreamView, labels: Sequence[str]) -> RenderableType:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column()
    table.add_column(justify="right")
    probs = dict(view.probs)
    for label in labels:
        p = probs.get(label)
        colour = label_colour(label, labels) if view.speech else "dim"
        style = f"bold {colour}" if label == view.label else colour
        table.add_row(
            Text(label, style=style),
            Text(bar(p or 0.0), style=colour),
            Text("  –  " if p is None else f"{p:5.1%}", style=style),
        )
    return table


def _timeline(view: StreamView, labels: Sequence[str]) -> Text:
    letters = label_letters(labels)
    text = Text("timeline  ", style="dim")
    for label in view.timeline:
        if label is None:
            text.append(NO_SPEECH_MARK, style="dim")
        else:
            text.append(letters.get(label, "?"), style=f"bold {label_colour(label, labels)}")
    text.append("   " + " ".join(f"{tag}={label}" for label, tag in letters.items()), style="dim")
    return text


def _level_line(view: StreamView, state: DashboardState) -> Text:
    text = Text("input     ", style="dim")
    if view.level_dbfs is None:
        text.append(bar(0.0, 20) + "   –  dBFS", style="dim")
    else:
        db = max(LEVEL_FLOOR_DBFS, view.level_dbfs)
        colour = "red" if db > -3 else "green" if db > -40 else "dim"
        text.append(bar(1.0 - db / LEVEL_FLOOR_DBFS, 20), style=colour)
        text.append(f" {db:6.1f} dBFS", style=colour)
    if view.clipping > 0:
        # the estimate stops being level-invariant where the input clips (models/default/REPORT.md)
        text.append(f"   CLIPPING {view.clipping:.1%}: turn the input gain down", style="bold red")
    if view.seq >= 0:
        text.append(
            "   speech " if view.speech else "   silence ", style="bold green" if view.speech else "dim"
        )
        text.append(f"{view.speech_prob:.0%}", style="dim")
    return text


def _stats_line(view: StreamView, state: DashboardState) -> Text:
    p50 = "–" if state.latency_p50_ms is None else f"{state.latency_p50_ms:.0f} ms"
    p99 = "–" if state.latency_p99_ms is None else f"{state.latency_p99_ms:.0f} ms"
    dropped_s = view.dropped_samples / state.sample_rate_hz if state.sample_rate_hz else 0.0
    text = Text(f"latency p50 {p50} · p99 {p99} · dropped audio {dropped_s:.2f} s", style="dim")
    if view.dropped_samples:
        text.stylize("bold red")
    return text


def _stream_table(state: DashboardState) -> Table:
    table = Table(title=f"{len(state.streams)} streams", expand=False)
    for name in ("stream", "label", "conf", "speech", "window", "latency", "dropped"):
        table.add_column(name, justify="left" if name in ("stream", "label") else "right")
    for v in state.streams:
        label = Text(
            "–" if v.label is None else v.label,
            style="dim" if v.label is None else label_colour(v.label, state.labels),
        )
        table.add_row(
            v.stream,
            label,
            f"{v.confidence:.0%}" if v.label else "–",
            "yes" if v.speech else "no",
            str(max(v.seq, 0)),
            f"{v.latency_ms:.0f} ms",
            f"{v.dropped_samples / state.sample_rate_hz:.2f} s",
        )
    return table


def render(state: DashboardState) -> RenderableType:
    """The whole dashboard for one snapshot (pure: same state, same output)."""
    header = Text(
        f"emostream · {state.source} · model {state.model} · window {state.window_s:g} s, "
        f"hop {state.hop_s:g} s",
        style="bold",
    )
    parts: list[RenderableType] = [header]
    view = _focus(state)
    if view is None:
        parts.append(Text("waiting for audio …", style="dim"))
    else:
        parts += [
            _headline(view, state.labels),
            _bars(view, state.labels),
            _timeline(view, state.labels),
            _level_line(view, state),
            _stats_line(view, state),
        ]
    if len(state.streams) > 1:
        parts.append(_stream_table(state))
    if state.status:
        parts.append(Text(state.status, style="bold yellow"))
    return Group(*parts)


# ---- the sink ------------------------------------------------------------------------------------------


@dataclass
class _Track:
    """Mutable per-stream state behind a ``StreamView``."""

    view: StreamView
    timeline: deque[str | None] = field(default_factory=lambda: deque(maxlen=TIMELINE_HOPS))
    clipped_at: float = -math.inf  # clock time of the last block that clipped


class Dashboard:
    """Sink that keeps the dashboard's state and redraws it with ``rich.live.Live`` at ``refresh_hz``."""

    def __init__(
        self,
        labels: Sequence[str],
        model: str,
        source: str,
        sample_rate_hz: int,
        window_s: float,
        hop_s: float,
        console: Console | None = None,
        refresh_hz: float = 10.0,
    ) -> None:
        self.labels = tuple(labels)
        self.model = model
        self.source = source
        self.sample_rate_hz = sample_rate_hz
        self.window_s = window_s
        self.hop_s = hop_s
        self.console = console if console is not None else Console(stderr=False)
        self.refresh_hz = refresh_hz
        self._lock = threading.Lock()
        self._live: Live | None = None
        self.clock = time.monotonic  # for the clipping warning's hold; tests replace it
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._tracks: dict[str, _Track] = {}
            self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
            self._status = ""
            self._focus: str | None = None

    # ---- inputs (any thread) -------------------------------------------------------------------

    def publish(self, event: object) -> None:
        """Fold in one ``Estimate`` (other event types are ignored)."""
        if not isinstance(event, Estimate):
            return
        e = event
        with self._lock:
            track = self._track(e.stream)
            track.timeline.append(e.label if e.speech else None)
            self._latencies.append(float(e.latency_ms))
            # without speech nothing was classified: the bars keep the last speech window's values
            probs = tuple((k, float(e.probs[k])) for k in self.labels if k in e.probs) or track.view.probs
            track.view = StreamView(
                stream=e.stream,
                seq=e.seq,
                label=e.label,
                confidence=float(e.confidence),
                probs=probs,
                speech=bool(e.speech),
                speech_prob=float(e.speech_prob),
                t_end_s=float(e.t_end_s),
                latency_ms=float(e.latency_ms),
                dropped_samples=int(e.dropped_samples),
                timeline=tuple(track.timeline),
                level_dbfs=track.view.level_dbfs,
                clipping=track.view.clipping,
            )

    def note_level(self, stream: str, chunk: np.ndarray) -> None:
        """Input level from the edge (the audio as it arrives), as RMS dBFS of ``chunk``, and whether it clips:
        a block with ``CLIP_MIN_SAMPLES`` or more samples at full scale sets a warning that stays
        ``CLIP_HOLD_S`` after the last such block."""
        x = np.asarray(chunk, dtype=np.float32)
        if x.size == 0:
            return
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        dbfs = 20.0 * math.log10(max(rms, 1e-10))
        clipped = int(np.count_nonzero(np.abs(x) >= CLIP_SAMPLE))
        now = self.clock()
        with self._lock:
            track = self._track(stream)
            clipping = track.view.clipping
            if clipped >= CLIP_MIN_SAMPLES:
                track.clipped_at, clipping = now, clipped / x.size
            elif now - track.clipped_at > CLIP_HOLD_S:
                clipping = 0.0
            track.view = replace(track.view, level_dbfs=dbfs, clipping=clipping)

    def set_status(self, text: str) -> None:
        with self._lock:
            self._status = text

    def set_focus(self, stream: str | None) -> None:
        with self._lock:
            self._focus = stream

    def _track(self, stream: str) -> _Track:
        track = self._tracks.get(stream)
        if track is None:
            track = self._tracks[stream] = _Track(StreamView(stream))
        return track

    # ---- output -------------------------------------------------------------------------------------

    def snapshot(self) -> DashboardState:
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64)
            return DashboardState(
                labels=self.labels,
                model=self.model,
                source=self.source,
                sample_rate_hz=self.sample_rate_hz,
                window_s=self.window_s,
                hop_s=self.hop_s,
                streams=tuple(t.view for t in self._tracks.values()),
                focus=self._focus,
                latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                latency_p99_ms=float(np.percentile(lat, 99)) if lat.size else None,
                status=self._status,
            )

    def start(self) -> Dashboard:
        if self._live is None:
            self._live = Live(
                get_renderable=lambda: render(self.snapshot()),
                console=self.console,
                refresh_per_second=self.refresh_hz,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def stop(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.refresh()
            live.stop()

    def close(self) -> None:
        """The ``Sink`` end: stop redrawing (the last frame stays on screen)."""
        self.stop()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
