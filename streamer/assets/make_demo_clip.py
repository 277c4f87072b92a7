"""Generate streamer/assets/demo.flac: synthetic English speech in four moods, made with espeak-ng.

The clip ships with the package so that `emostream demo` works with no microphone and no corpus
audio in the repository. Every line is spoken by espeak-ng (a formant synthesiser: no recorded
voice goes into it) with its own voice and prosody (`-p` pitch, `-s` words per minute, `-a`
amplitude), so that the moods differ audibly: calm/neutral, happy/excited, sad/slow, angry/loud.
Lines are resampled to 16 kHz with soxr, joined with 0.5 s of silence, scaled by one gain for the
whole clip (loudness differences between lines are kept) and written as 16-bit mono FLAC.

Deterministic: the same espeak-ng version gives the same file, byte for byte.

    python streamer/assets/make_demo_clip.py [--out streamer/assets/demo.flac]

Needs the Debian package `espeak-ng` (see .ci/apt-packages.txt).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE_HZ = 16000
PAUSE_S = 0.5
LEAD_S = 0.25
PEAK = 0.89  # about -1 dBFS for the loudest sample of the clip
ESPEAK_TIMEOUT_S = 30.0
DEFAULT_OUT = Path(__file__).resolve().parent / "demo.flac"


@dataclass(frozen=True, slots=True)
class Line:
    """One sentence and the espeak-ng settings that give it its mood."""

    mood: str
    voice: str
    pitch: int  # espeak-ng -p, 0..99 (50 = default)
    words_per_minute: int  # espeak-ng -s (175 = default)
    amplitude: int  # espeak-ng -a, 0..200 (100 = default)
    text: str


LINES: tuple[Line, ...] = (
    Line("neutral", "en-us", 50, 155, 100, "The next train leaves at ten fifteen."),
    Line("happy", "en-us+f3", 85, 195, 130, "Wow, we actually won! This is the best day ever!"),
    Line("sad", "en-us+m3", 22, 115, 60, "I miss them. Nothing feels the same."),
    Line("angry", "en-us", 35, 190, 170, "Stop it right now! I told you a hundred times!"),
    Line("neutral", "en-gb", 48, 150, 100, "Please take a seat over there."),
    Line("happy", "en+f2", 90, 200, 130, "Yes! Tickets for tonight! I can't wait!"),
    Line("sad", "en-gb+f4", 20, 110, 55, "It's over. We lost everything."),
    Line("angry", "en+m1", 30, 185, 170, "Get out! I never want to see you again!"),
)


def synthesize(line: Line, espeak: str) -> np.ndarray:
    """Speak one line with espeak-ng; return float32 mono audio at SAMPLE_RATE_HZ."""
    cmd = [
        espeak,
        "-v",
        line.voice,
        "-p",
        str(line.pitch),
        "-s",
        str(line.words_per_minute),
        "-a",
        str(line.amplitude),
        "--stdout",
        line.text,
    ]
    wav = subprocess.run(cmd, check=True, capture_output=True, timeout=ESPEAK_TIMEOUT_S).stdout
    audio, rate_hz = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, rate_hz, SAMPLE_RATE_HZ, quality="VHQ").astype(np.float32)


def make_clip(lines: tuple[Line, ...], espeak: str) -> np.ndarray:
    """Join the spoken lines with pauses and scale the whole clip by one gain to PEAK."""
    pause = np.zeros(round(PAUSE_S * SAMPLE_RATE_HZ), dtype=np.float32)
    lead = np.zeros(round(LEAD_S * SAMPLE_RATE_HZ), dtype=np.float32)
    parts = [lead]
    for i, line in enumerate(lines):
        if i:
            parts.append(pause)
        parts.append(synthesize(line, espeak))
    parts.append(lead)
    clip = np.concatenate(parts)
    return (clip * (PEAK / float(np.max(np.abs(clip))))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output FLAC (default: %(default)s)")
    args = parser.parse_args(argv)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print("espeak-ng not found: apt-get install espeak-ng", file=sys.stderr)
        return 1
    clip = make_clip(LINES, espeak)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, clip, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    n_bytes = args.out.stat().st_size
    print(
        f"wrote {args.out}: {clip.size / SAMPLE_RATE_HZ:.2f} s, {SAMPLE_RATE_HZ} Hz mono, {n_bytes / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
