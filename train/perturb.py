"""Channel and level transforms of mono float32 audio: the ones training augments with and evaluation tests.

Each transform is a plain function of ``(audio, sample_rate_hz, ...)`` that returns new float32 audio
of the same length (the input is never modified), so the training augmenter (``train.augment``) and
the robustness report of ``emostream evaluate --perturb`` (``Perturbation``) apply the very same code.

- ``apply_gain``: scale by dB, clipped at full scale (what a gain knob does).
- ``active_rms``: RMS over the active speech only (frames within 30 dB of the loudest 20-ms frame),
  so an SNR means speech against noise, not leading silence against noise.
- ``add_noise``: white or pink noise at an SNR over active speech, from ``noise_bank`` excerpts.
- ``band_limit``: a band-pass in the frequency domain (smooth 1/2-octave skirts).
- ``telephone``: 300-3400 Hz, resampled to 8 kHz, 8-bit mu-law, back to the model's rate.
- ``quantise``: fewer bits (linear), as a cheap sound card or a codec does.
- ``random_eq``: a smooth random gain curve over log frequency (+-``max_db``), a microphone's colour.
- ``reverb``: convolution with a synthetic room impulse response (``synthetic_rir``: direct path,
  sparse early reflections and an exponentially decaying diffuse tail with the given RT60).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

FRAME_S = 0.02
ACTIVE_DB = 30.0
NOISE_BANK_S = 20.0
"""Seconds of each pre-generated noise colour; callers take random excerpts of it."""


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio * 10**(gain_db/20)``, clipped to [-1, 1] as a real input stage clips."""
    out = audio.astype(np.float32) * np.float32(10.0 ** (gain_db / 20.0))
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


def active_rms(audio: np.ndarray, sample_rate_hz: int, active_db: float = ACTIVE_DB) -> float:
    """RMS of the 20-ms frames within ``active_db`` of the loudest one (0.0 for silence)."""
    n = max(1, int(FRAME_S * sample_rate_hz))
    usable = len(audio) // n * n
    if usable == 0:
        return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    power = np.mean(np.square(audio[:usable].reshape(-1, n), dtype=np.float64), axis=1)
    top = float(power.max())
    if top <= 0.0:
        return 0.0
    active = power[power >= top * 10.0 ** (-active_db / 10.0)]
    return float(np.sqrt(active.mean()))


def noise_bank(sample_rate_hz: int, seed: int) -> dict[str, np.ndarray]:
    """Unit-RMS white and pink noise, ``NOISE_BANK_S`` long each."""
    rng = np.random.default_rng(seed)
    n = int(NOISE_BANK_S * sample_rate_hz)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))  # 1/f power
    pink = np.fft.irfft(spectrum, n)
    return {
        name: (x / np.sqrt(np.mean(x**2))).astype(np.float32) for name, x in (("white", white), ("pink", pink))
    }


def add_noise(
    audio: np.ndarray,
    sample_rate_hz: int,
    snr_db: float,
    noise: np.ndarray,
    start: int = 0,
    speech_rms: float | None = None,
) -> np.ndarray:
    """Add ``noise[start:start+len]`` (scaled to unit RMS) at ``snr_db`` below the active-speech RMS.

    ``speech_rms`` overrides the measured level (a window whose speech is only part of it passes the
    level of its speech). Silent audio is returned unchanged."""
    rms = active_rms(audio, sample_rate_hz) if speech_rms is None else speech_rms
    if rms <= 0.0 or len(audio) == 0:
        return audio.astype(np.float32, copy=True)
    if len(noise) < len(audio):
        noise = np.resize(noise, len(audio))
        start = 0
    start = min(start, len(noise) - len(audio))
    segment = noise[start : start + len(audio)].astype(np.float64)
    seg_rms = float(np.sqrt(np.mean(segment**2)))
    scale = rms / 10.0 ** (snr_db / 20.0) / max(seg_rms, 1e-12)
    return (audio + scale * segment).astype(np.float32)


def _fft_filter(audio: np.ndarray, sample_rate_hz: int, gain_of_hz) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Zero-phase filtering by a real gain curve ``gain_of_hz(freqs) -> gains`` (linear amplitude)."""
    if len(audio) == 0:
        return audio.astype(np.float32, copy=True)
    n = 1 << int(np.ceil(np.log2(len(audio) + 1)))
    spec = np.fft.rfft(audio.astype(np.float64), n)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate_hz)
    out = np.fft.irfft(spec * gain_of_hz(freqs), n)[: len(audio)]
    return out.astype(np.float32)


def band_limit(audio: np.ndarray, sample_rate_hz: int, low_hz: float = 0.0, high_hz: float = 0.0) -> np.ndarray:
    """Keep ``low_hz``-``high_hz`` (0 = no limit on that side); half-octave raised-cosine skirts outside."""

    def gain(freqs: np.ndarray) -> np.ndarray:
        g = np.ones_like(freqs)
        octaves = np.log2(np.maximum(freqs, 1.0))
        if low_hz > 0:
            below = np.clip((np.log2(low_hz) - octaves) / 0.5, 0.0, 1.0)
            g *= 0.5 * (1 + np.cos(np.pi * below))
        if high_hz > 0:
            above = np.clip((octaves - np.log2(high_hz)) / 0.5, 0.0, 1.0)
            g *= 0.5 * (1 + np.cos(np.pi * above))
        return g

    return _fft_filter(audio, sample_rate_hz, gain)


def mu_law(audio: np.ndarray, bits: int = 8) -> np.ndarray:
    """Mu-law companding to ``bits`` bits and back (G.711 uses 8)."""
    mu = float(2**bits - 1)
    x = np.clip(audio.astype(np.float64), -1.0, 1.0)
    encoded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    levels = np.round((encoded + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0
    return (np.sign(levels) * np.expm1(np.abs(levels) * np.log1p(mu)) / mu).astype(np.float32)


def telephone(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """A narrow-band telephone line: 300-3400 Hz, 8 kHz sampling, 8-bit mu-law, back to ``sample_rate_hz``."""
    if len(audio) == 0:
        return audio.astype(np.float32, copy=True)
    narrow = band_limit(audio, sample_rate_hz, 300.0, 3400.0)
    at8k = soxr.resample(narrow, sample_rate_hz, 8000, quality="HQ") if sample_rate_hz != 8000 else narrow
    back = soxr.resample(mu_law(np.asarray(at8k, np.float32)), 8000, sample_rate_hz, quality="HQ")
    out = np.zeros(len(audio), np.float32)
    out[: min(len(back), len(audio))] = back[: len(audio)]
    return out


def quantise(audio: np.ndarray, bits: int) -> np.ndarray:
    """Linear quantisation to ``bits`` bits (round to the nearest level)."""
    step = 2.0 / (2**bits)
    return (np.round(np.clip(audio, -1.0, 1.0) / step) * step).astype(np.float32)


def random_eq(audio: np.ndarray, sample_rate_hz: int, rng: np.random.Generator, max_db: float = 8.0) -> np.ndarray:
    """A smooth random EQ: gains drawn at 6 log-spaced frequencies (100 Hz to Nyquist), interpolated."""
    nodes = np.geomspace(100.0, sample_rate_hz / 2, 6)
    gains_db = rng.uniform(-max_db, max_db, len(nodes))

    def gain(freqs: np.ndarray) -> np.ndarray:
        db = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(nodes), gains_db)
        return 10.0 ** (db / 20.0)

    return _fft_filter(audio, sample_rate_hz, gain)


def synthetic_rir(sample_rate_hz: int, rt60_s: float, rng: np.random.Generator, direct_ratio_db: float = 0.0) -> np.ndarray:
    """A room impulse response: a unit direct path, 6-12 early reflections in the first 5-40 ms, and a
    diffuse tail of decaying Gaussian noise (-60 dB at ``rt60_s``); the tail's energy is
    ``direct_ratio_db`` below the direct path's. Normalised to unit peak."""
    n = max(2, int(rt60_s * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    decay = np.exp(-6.9078 * t / rt60_s)  # amplitude 1e-3 (-60 dB) at t = rt60_s
    tail = rng.standard_normal(n) * decay
    onset = int(0.005 * sample_rate_hz)
    tail[:onset] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_ratio_db / 10.0) / max(float(np.sum(tail**2)), 1e-12))
    rir = tail
    for _ in range(int(rng.integers(6, 13))):
        k = int(rng.uniform(0.005, 0.04) * sample_rate_hz)
        if k < n:
            rir[k] += rng.uniform(-0.6, 0.6)
    rir[0] = 1.0
    return (rir / np.max(np.abs(rir))).astype(np.float32)


def reverb(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (FFT), cut to the input's length, keep the input's active RMS level."""
    if len(audio) == 0:
        return audio.astype(np.float32, copy=True)
    n = 1 << int(np.ceil(np.log2(len(audio) + len(rir))))
    wet = np.fft.irfft(np.fft.rfft(audio.astype(np.float64), n) * np.fft.rfft(rir.astype(np.float64), n), n)
    wet = wet[: len(audio)]
    before = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    after = float(np.sqrt(np.mean(wet**2)))
    if after > 0:
        wet *= before / after
    return np.clip(wet, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- named evaluation conditions


PERTURB_HELP = (
    "clean; gain:DB (e.g. gain:-12, gain:+12; clipped at full scale); level:DBFS (active speech set to "
    "DBFS, e.g. level:-20); phone (300-3400 Hz, 8 kHz, 8-bit mu-law); lowpass:HZ; noise:SNR (pink noise, "
    "SNR in dB over active speech); reverb[:RT60] (synthetic room, default 0.5 s); bits:N"
)


@dataclass(frozen=True, slots=True)
class Perturbation:
    """One named evaluation condition (``Perturbation.parse('gain:-12')``), deterministic per clip."""

    kind: str
    value: float = 0.0

    @property
    def name(self) -> str:
        if self.kind in ("clean", "phone"):
            return self.kind
        if self.kind == "gain":
            return f"gain:{self.value:+g}"
        return f"{self.kind}:{self.value:g}"

    @classmethod
    def parse(cls, text: str) -> Perturbation:
        kind, _, arg = text.strip().partition(":")
        kind = kind.lower()
        defaults = {"reverb": 0.5}
        needs_value = {"gain", "level", "lowpass", "noise", "bits"}
        if kind in ("clean", "phone"):
            if arg:
                raise ValueError(f"perturbation {kind!r} takes no value, got {text!r}")
            return cls(kind)
        if kind in needs_value or kind in defaults:
            if not arg and kind in defaults:
                return cls(kind, defaults[kind])
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(f"perturbation {text!r}: {kind} needs a number, e.g. {kind}:10") from None
            if kind in ("lowpass", "reverb", "bits") and value <= 0:
                raise ValueError(f"perturbation {text!r}: the value must be positive")
            return cls(kind, value)
        raise ValueError(f"unknown perturbation {text!r}; known: {PERTURB_HELP}")

    @classmethod
    def parse_list(cls, text: str) -> list[Perturbation]:
        items = [cls.parse(t) for t in text.split(",") if t.strip()]
        if not any(p.kind == "clean" for p in items):
            items.insert(0, cls("clean"))
        return list(dict.fromkeys(items))

    def apply(self, audio: np.ndarray, sample_rate_hz: int, seed: int = 0) -> np.ndarray:
        """The perturbed copy of one clip; ``seed`` (e.g. the clip's index) fixes the noise/room drawn."""
        x = np.asarray(audio, dtype=np.float32)
        if self.kind == "clean":
            return x.copy()
        if self.kind == "gain":
            return apply_gain(x, self.value)
        if self.kind == "level":
            rms = active_rms(x, sample_rate_hz)
            if rms <= 0:
                return x.copy()
            return apply_gain(x, self.value - 20.0 * float(np.log10(rms)))
        if self.kind == "phone":
            return telephone(x, sample_rate_hz)
        if self.kind == "lowpass":
            return band_limit(x, sample_rate_hz, 0.0, self.value)
        if self.kind == "bits":
            return quantise(x, int(self.value))
        rng = np.random.default_rng([seed, 7919])
        if self.kind == "noise":
            bank = _eval_noise(sample_rate_hz)
            start = int(rng.integers(0, max(1, len(bank) - len(x))))
            return np.clip(add_noise(x, sample_rate_hz, self.value, bank, start), -1.0, 1.0)
        if self.kind == "reverb":
            return reverb(x, synthetic_rir(sample_rate_hz, self.value, rng))
        raise ValueError(f"unknown perturbation kind {self.kind!r}")


_EVAL_NOISE: dict[int, np.ndarray] = {}


def _eval_noise(sample_rate_hz: int) -> np.ndarray:
    """The evaluation's fixed pink noise (seed 1234), made once per rate."""
    if sample_rate_hz not in _EVAL_NOISE:
        _EVAL_NOISE[sample_rate_hz] = noise_bank(sample_rate_hz, 1234)["pink"]
    return _EVAL_NOISE[sample_rate_hz]
