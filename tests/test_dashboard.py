"""Dashboard: render is a pure function of the snapshot; the text shows label, percentages, bars, timeline, level."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from emostream.streamer.core.events import Estimate
from emostream.streamer.sinks.dashboard import (
    CLIP_HOLD_S,
    Dashboard,
    DashboardState,
    StreamView,
    bar,
    label_letters,
    render,
)

LABELS = ("neutral", "happy", "sad", "angry", "surprised")


def text_of(renderable: object, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def estimate(
    stream: str,
    seq: int,
    label: str | None,
    probs: dict[str, float],
    latency_ms: float = 10.0,
    dropped: int = 0,
) -> Estimate:
    speech = label is not None
    return Estimate(
        stream,
        seq,
        max(0.0, seq - 4.0),
        seq + 1.0,
        label,
        probs.get(label, 0.0) if label else 0.0,
        probs if speech else {},
        probs if speech else {},
        speech,
        0.9 if speech else 0.0,
        latency_ms,
        "tiny",
        dropped,
    )


SAD = {"neutral": 0.1, "happy": 0.15, "sad": 0.65, "angry": 0.05, "surprised": 0.05}


def test_render_shows_label_percentages_bars_and_timeline() -> None:
    view = StreamView(
        stream="mic",
        seq=7,
        label="sad",
        confidence=0.65,
        probs=tuple(SAD.items()),
        speech=True,
        speech_prob=0.9,
        t_end_s=8.0,
        latency_ms=12.0,
        dropped_samples=0,
        timeline=("happy", None, "sad", "surprised"),
        level_dbfs=-23.4,
    )
    state = DashboardState(
        LABELS,
        "tiny",
        "demo.flac",
        16000,
        5.0,
        1.0,
        streams=(view,),
        latency_p50_ms=12.0,
        latency_p99_ms=31.0,
    )
    text = text_of(render(state))
    assert text == text_of(render(state))  # pure: same state, same picture
    assert "SAD" in text and "65%" in text
    for label, p in SAD.items():
        line = next(line for line in text.splitlines() if line.strip().startswith(label + " "))
        assert f"{p:.1%}".rjust(5) in line
        assert bar(p) in line
    assert "H·SU" in text and "U=surprised" in text  # one distinct letter per label
    assert "-23.4 dBFS" in text and "speech 90%" in text
    assert "p50 12 ms" in text and "p99 31 ms" in text and "dropped audio 0.00 s" in text
    assert "demo.flac" in text and "window 5 s, hop 1 s" in text
    assert "streams" not in text  # one stream: no table


def test_no_speech_waiting_and_several_streams() -> None:
    waiting = DashboardState(LABELS, "tiny", "mic", 16000, 5.0, 1.0)
    assert "waiting for audio" in text_of(render(waiting))
    dash = Dashboard(LABELS, "tiny", "serve", 16000, 5.0, 1.0, console=Console(file=io.StringIO()))
    dash.publish(estimate("a", 0, "sad", SAD))
    dash.publish(estimate("a", 1, None, {}))
    dash.publish(
        estimate(
            "b",
            0,
            "happy",
            {"neutral": 0.1, "happy": 0.8, "sad": 0.05, "angry": 0.05, "surprised": 0.0},
            latency_ms=30.0,
            dropped=8000,
        )
    )
    dash.note_level("a", np.full(1600, 0.1, dtype=np.float32))
    dash.set_status("finished")
    text = text_of(render(dash.snapshot()))
    assert "no speech" in text  # stream a, shown large, is silent now
    assert "2 streams" in text and "happy" in text and "0.50 s" in text  # b's 8000 dropped samples
    assert "-20.0 dBFS" in text and "silence" in text and "finished" in text
    dash.set_focus("b")
    assert "HAPPY" in text_of(render(dash.snapshot()))


def test_input_line_warns_while_the_input_clips() -> None:
    """A block with samples at full scale sets a warning on the input line (the model is level-invariant
    only until the input clips); it stays for CLIP_HOLD_S after the last clipping block, then goes; one
    full-scale sample (a click) does not set it; the estimates that follow keep it."""
    dash = Dashboard(LABELS, "tiny", "mic", 16000, 5.0, 1.0, console=Console(file=io.StringIO()))
    now = [100.0]
    dash.clock = lambda: now[0]
    quiet = np.full(1600, 0.1, dtype=np.float32)
    click = quiet.copy()
    click[5] = 1.0
    hot = quiet.copy()
    hot[:16] = 1.0
    hot[16:32] = -1.0
    dash.note_level("a", click)
    assert "CLIPPING" not in text_of(render(dash.snapshot()))
    dash.note_level("a", hot)
    dash.publish(estimate("a", 0, "sad", SAD))
    assert "CLIPPING 2.0%: turn the input gain down" in text_of(render(dash.snapshot()))
    now[0] += CLIP_HOLD_S - 0.5
    dash.note_level("a", quiet)
    assert "CLIPPING" in text_of(render(dash.snapshot()))
    now[0] += 1.0
    dash.note_level("a", quiet)
    assert "CLIPPING" not in text_of(render(dash.snapshot()))


def test_live_refreshes_on_its_own() -> None:
    out = io.StringIO()
    dash = Dashboard(
        LABELS,
        "tiny",
        "demo",
        16000,
        5.0,
        1.0,
        console=Console(file=out, width=100, force_terminal=True, color_system=None),
        refresh_hz=50,
    )
    with dash:
        dash.publish(
            estimate(
                "mic", 0, "angry", {"neutral": 0.0, "happy": 0.0, "sad": 0.0, "angry": 1.0, "surprised": 0.0}
            )
        )
    assert "ANGRY" in out.getvalue() and "100%" in out.getvalue()


def test_letters_are_distinct() -> None:
    letters = label_letters(("sad", "surprised", "scared", "s"))
    assert len(set(letters.values())) == 4
