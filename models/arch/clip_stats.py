"""clip_stats: the statistics baseline as a streaming model (window statistics, standardised, one linear layer).

The statistics baseline (``train.baseline``: per-clip log-mel and pitch statistics + logistic regression)
scores as well as the deep models on held-out speakers and errs on other clips, so the two together
beat either (docs/results.md). This is its streaming form: the same kind of statistics computed per
5-s window from the model's own features inside the model file, so the streamer, ``emostream
evaluate``, TorchScript and ONNX run it like any model and an ensemble (``models.arch.ensemble``) can
hold it beside a deep model.

Per window, from the natural-log mel ``(B, n_mels, T)`` (and with ``pitch`` the features' two pitch
rows, ``models.features.pitch_rows``):

- present frames: above the window's floor (``floor_db`` below its loudest bin), so zero padding and
  digital silence are left out; active frames: present, with a mean log-mel within ``active_db`` of
  the loudest frame's;
- over the active frames, per mel bin: the mean relative to the window's mean level, the standard
  deviation, and the standard deviation of the change between consecutive active frames (3 x n_mels);
  with ``ltas_cepstra`` K > 0 (0, every bin, in model files without the setting) the first of these,
  the window's long-term spectrum, is given as its DCT coefficients 1..K instead (its tilt and broad
  shape; the bins' detail holds the speaker's formants and the microphone's response as much as the
  emotion), so 2 x n_mels + K;
- frame level relative to the loudest frame: 10th, 50th and 90th percentile and mean over the present
  frames, standard deviation over the active ones, and the active share of the present frames (6);
- with ``pitch``: the voiced share of the active frames (a soft voicing weight, periodicity 0.4 -> 0,
  0.8 -> 1), the voiced mean, standard deviation, 10th and 90th percentile of log2 F0, and the mean
  and standard deviation of its change between consecutive voiced frames (7); with ``f0_relative``
  (off in model files without the setting) the voiced mean is left out and the two percentiles are
  relative to it (6): how high the voice is tells the speaker (age, sex) as much as the emotion;
- with ``extended`` (the recipe's setting for new fits since 2026-12-05; off in older model files),
  after all of the above (which stay the first columns, in the same order): per mel bin the
  standard deviation over the active frames of the frame's spectral shape (its log-mel minus the
  frame's mean, so the frame's loudness is left out; n_mels); the mean and standard deviation of the
  change in frame level between consecutive active frames, and of the spectral centroid (in mel
  bins) over the active frames; the 25th and 75th percentile of the active frames' level relative to
  the loudest (6); with ``pitch`` also the mean and deviation of the periodicity over the active
  frames, its mean over the voiced frames, and the slope of log2 F0 over time across the voiced
  frames, in octaves per second (4).
- with ``dynamics`` (the recipe's setting for the latest fits; off in older model files),
  after all of the above: how the frame level moves over 20, 50, 100 and 250 ms (the standard
  deviation and the mean magnitude of its change over those lags, present frames; 8) and how each
  quarter of the mel range moves over 50 and 250 ms (standard deviation, active frames; 8); the bursts
  of active frames per second of present audio, their mean length in seconds and the share of the
  present frames that are not active (pauses) (3); the spectral flux of the level-free frame shape over
  10 and 50 ms (mean and deviation; 4); the spread over the active frames of cepstra 1-12 of the frame
  shape (a DCT of the mel bins) and of their change between consecutive frames (24); with ``pitch``
  also the voiced stretches per second and their mean length (2), how log2 F0 moves over 50, 100 and
  250 ms (standard deviation and mean magnitude, voiced pairs; 6) and the correlation of frame level
  and F0 over the voiced frames (1). Rhythm and movement at syllable time scales, which the
  per-frame statistics above do not see.
- with ``voiced_ltas`` (and ``pitch``; off in model files without the setting), after all of the above:
  the long-term spectrum of the voiced frames alone (per mel bin, the log-mel's mean over the frames
  weighted by their voicing, relative to its mean over the bins; n_mels): the vowels' average
  spectrum, which the all-active-frames mean blurs with consonants and breath.
- with ``denoise`` (an over-subtraction factor; 0, off, in model files without the setting), before
  all of the above: spectral subtraction. The noise estimate is the mean spectrum (power, or with
  ``denoise_estimate`` "log" the mean log-mel) of the quietest fifth (``denoise_quiet``) of the
  present frames by frame level; ``denoise`` times it is subtracted from every frame's power, each
  bin keeping at least the estimate less 20 dB; and an active frame must also carry more mean power
  than the estimate. Every statistic is then computed from the log-mel after the subtraction.
  Without it a steady noise 10 dB under the speech makes every frame active (a frame's level is its
  mean log-mel, which the empty upper bins rule), so the rhythm statistics read the noise.

- with ``bins`` ``[first, stop)`` (null, every mel bin, in model files without the setting): every statistic
  above reads those mel bins alone, as if the features had no others (the pitch rows are read as before).
  ``[6, 45]`` is the telephone band for the default features (64 bins, 50-8000 Hz: the 39 filters lying
  wholly within 324-3271 Hz), so a telephone line leaves the statistics nearly as they were, where with
  every bin its empty upper bins rule the frame level, the active frames and every relative spectrum.

Every statistic is relative to the window itself, so a gain changes nothing (above the features'
absolute ``log_floor``). The statistics are standardised with the training windows' mean and
deviation (buffers ``mean``, ``scale``); then either one linear layer gives the logits (``hidden`` 0,
the setting of every model file before 2026-12-05 evening), or ``heads`` small networks of one hidden
layer (``hidden`` ReLU units each), fitted apart from different seeds, each give class probabilities
and the output is the log of their mean (a bag: the same combination as ``models.arch.ensemble``).
``emostream train --arch clip_stats`` fits it (``train.statsfit``): the linear layer in closed form,
the heads by a few epochs of AdamW over the window statistics, not through the log-mel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.arch.layers import DB_TO_LN, present_frames

DEFAULTS: dict[str, Any] = {
    "pitch": True,
    "floor_db": 60.0,
    "active_db": 30.0,
    "extended": False,
    "dynamics": False,
    "denoise": 0.0,
    "denoise_quiet": 0.2,
    "denoise_estimate": "mean",
    "ltas_cepstra": 0,
    "voiced_ltas": False,
    "bins": None,
    "f0_relative": False,
    "hidden": 0,
    "heads": 1,
}

ENERGY_STATS = 6
PITCH_STATS = 7
EXTENDED_STATS = 6
EXTENDED_PITCH_STATS = 4
DYNAMICS_LEVEL_LAGS = (2, 5, 10, 25)
"""Frame lags (10-ms hops) of the level-modulation statistics: 20 ms to a quarter of a second."""
DYNAMICS_BAND_LAGS = (5, 25)
DYNAMICS_PITCH_LAGS = (5, 10, 25)
DYNAMICS_FLUX_LAGS = (1, 5)
DYNAMICS_BANDS = 4
N_CEPSTRA = 12
DYNAMICS_STATS = 2 * len(DYNAMICS_LEVEL_LAGS) + DYNAMICS_BANDS * len(DYNAMICS_BAND_LAGS) + 3 + 2 * len(DYNAMICS_FLUX_LAGS) + 2 * N_CEPSTRA
DYNAMICS_PITCH_STATS = 2 + 2 * len(DYNAMICS_PITCH_LAGS) + 1
DENOISE_QUIET = 0.2
"""``denoise``: the default share of the window's present frames, the quietest by frame level, whose mean
spectrum is the noise estimate (setting ``denoise_quiet``)."""
DENOISE_FLOOR_DB = 20.0
"""``denoise``: after subtraction a bin keeps at least the noise estimate less this many dB."""
DENOISE_ESTIMATES = ("mean", "log")
"""``denoise_estimate``: how the quiet frames' spectra are averaged per bin into the noise estimate:
``mean``, their mean power (every model file before 2026-12-05 night), or ``log``, the mean of their
log-mel (a geometric mean), which a few loud frames among the quiet ones move far less."""
FRAMES_PER_S = 100.0
"""The F0 slope's time unit: frames at the features' 10-ms hop (a scale; standardisation removes it)."""


def n_statistics(
    n_mels: int,
    pitch: bool,
    extended: bool = False,
    dynamics: bool = False,
    ltas_cepstra: int = 0,
    voiced_ltas: bool = False,
    f0_relative: bool = False,
) -> int:
    """How many statistics ``WindowStatistics`` computes per window."""
    n = 2 * n_mels + (ltas_cepstra or n_mels) + ENERGY_STATS + (PITCH_STATS - int(f0_relative) if pitch else 0)
    if extended:
        n += n_mels + EXTENDED_STATS + (EXTENDED_PITCH_STATS if pitch else 0)
    if dynamics:
        n += DYNAMICS_STATS + (DYNAMICS_PITCH_STATS if pitch else 0)
    if voiced_ltas and pitch:
        n += n_mels
    return n


def cepstral_basis(n_mels: int, n_cepstra: int) -> torch.Tensor:
    """``(n_cepstra, n_mels)`` orthonormal DCT-II rows 1..n_cepstra (the 0th, the level, left out)."""
    k = torch.arange(1, n_cepstra + 1, dtype=torch.float32).unsqueeze(1)
    m = torch.arange(n_mels, dtype=torch.float32).unsqueeze(0)
    return torch.cos(math.pi / n_mels * (m + 0.5) * k) * math.sqrt(2.0 / n_mels)


def _lagged_change(x: torch.Tensor, w: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard deviation and mean magnitude of ``x[..., t + lag] - x[..., t]`` over the pairs of frames
    that both weigh in ``w (B, T)``; ``x (B, T)`` or ``(B, K, T)``."""
    change = x[..., lag:] - x[..., :-lag]
    pair = w[:, lag:] * w[:, :-lag]
    if change.dim() == 3:
        pair = pair.unsqueeze(1)
    _, std = _masked_mean_std(change, pair)
    magnitude, _ = _masked_mean_std(change.abs(), pair)
    return std, magnitude


def masked_quantiles(x: torch.Tensor, mask: torch.Tensor, quantiles: list[float]) -> torch.Tensor:
    """Per row of ``x (B, T)``, the given quantiles of the entries where ``mask (B, T)`` is set (nearest
    rank): ``(B, len(quantiles))``; 0 for a row with none set."""
    keep = mask > 0.5
    filled = torch.where(keep, x, torch.full_like(x, 1e9))
    ordered, _ = torch.sort(filled, dim=1)
    n = keep.sum(dim=1, keepdim=True)  # (B, 1)
    last = (n - 1).clamp(min=0).to(x.dtype)
    picks: list[torch.Tensor] = []
    for q in quantiles:
        index = torch.round(last * q).to(torch.long)
        picks.append(torch.gather(ordered, 1, index))
    out = torch.cat(picks, dim=1)
    return torch.where(n > 0, out, torch.zeros_like(out))


def _masked_mean_std(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over the last axis: ``x (..., T)``, weights ``w`` broadcastable."""
    total = w.sum(dim=-1).clamp(min=1e-6)
    mean = (x * w).sum(dim=-1) / total
    var = ((x - mean.unsqueeze(-1)).square() * w).sum(dim=-1) / total
    return mean, torch.sqrt(var + 1e-8)


class WindowStatistics(nn.Module):
    """Features ``(B, n_mels [+ 2], T)`` -> statistics ``(B, n_statistics)`` (module docstring)."""

    __constants__ = [
        "n_mels",
        "pitch",
        "floor",
        "active",
        "extended",
        "dynamics",
        "frames_per_s",
        "level_lags",
        "band_lags",
        "pitch_lags",
        "flux_lags",
        "bands",
        "denoise",
        "denoise_floor",
        "quiet",
        "log_estimate",
        "ltas_cepstra",
        "voiced_ltas",
        "first_bin",
        "pitch_row",
        "f0_relative",
    ]

    def __init__(
        self,
        n_mels: int,
        pitch: bool,
        floor_db: float,
        active_db: float,
        extended: bool = False,
        dynamics: bool = False,
        denoise: float = 0.0,
        denoise_quiet: float = DENOISE_QUIET,
        denoise_estimate: str = "mean",
        ltas_cepstra: int = 0,
        voiced_ltas: bool = False,
        bins: tuple[int, int] | None = None,
        f0_relative: bool = False,
    ) -> None:
        super().__init__()
        self.pitch_row = int(n_mels)  # the features' pitch rows follow every mel bin, whichever bins are read
        if bins is not None:
            first, stop = bins
            if not 0 <= first < stop <= n_mels or stop - first < 4:
                raise ValueError(
                    f"clip_stats: bins is [first, stop) within the {n_mels} mel bins, at least 4 wide, got {[first, stop]}"
                )
            n_mels = stop - first
        self.first_bin = 0 if bins is None else int(bins[0])
        if not 0.0 <= float(denoise) <= 10.0:
            raise ValueError(f"clip_stats: denoise is an over-subtraction factor from 0 (off) to 10, got {denoise}")
        if not 0.0 < float(denoise_quiet) < 1.0:
            raise ValueError(f"clip_stats: denoise_quiet is a share of the frames, above 0 and below 1, got {denoise_quiet}")
        if denoise_estimate not in DENOISE_ESTIMATES:
            raise ValueError(
                f"clip_stats: denoise_estimate is one of {', '.join(DENOISE_ESTIMATES)}, got {denoise_estimate!r}"
            )
        if isinstance(ltas_cepstra, bool) or not isinstance(ltas_cepstra, int) or not 0 <= ltas_cepstra <= N_CEPSTRA:
            raise ValueError(f"clip_stats: ltas_cepstra is 0 (every mel bin) or 1 to {N_CEPSTRA}, got {ltas_cepstra!r}")
        self.ltas_cepstra = ltas_cepstra
        if voiced_ltas and not pitch:
            raise ValueError("clip_stats: voiced_ltas needs the pitch rows (pitch: true)")
        self.voiced_ltas = bool(voiced_ltas)
        if f0_relative and not pitch:
            raise ValueError("clip_stats: f0_relative needs the pitch rows (pitch: true)")
        self.f0_relative = bool(f0_relative)
        self.denoise = float(denoise)
        self.log_estimate = denoise_estimate == "log"
        self.denoise_floor = -float(DENOISE_FLOOR_DB) * DB_TO_LN
        self.quiet = float(denoise_quiet)
        self.n_mels = int(n_mels)
        self.pitch = bool(pitch)
        self.extended = bool(extended)
        self.dynamics = bool(dynamics)
        self.level_lags = DYNAMICS_LEVEL_LAGS
        self.band_lags = DYNAMICS_BAND_LAGS
        self.pitch_lags = DYNAMICS_PITCH_LAGS
        self.flux_lags = DYNAMICS_FLUX_LAGS
        self.bands = DYNAMICS_BANDS
        if self.dynamics and self.n_mels < self.bands:
            raise ValueError(f"clip_stats: dynamics needs at least {self.bands} mel bins, got {self.n_mels}")
        # not in the state dict: model files without dynamics load as before
        self.register_buffer("cepstra", cepstral_basis(self.n_mels, N_CEPSTRA), persistent=False)
        self.frames_per_s = FRAMES_PER_S
        self.floor = float(floor_db) * DB_TO_LN
        self.active = float(active_db) * DB_TO_LN
        self.n_out = n_statistics(
            self.n_mels, self.pitch, self.extended, self.dynamics, self.ltas_cepstra, self.voiced_ltas, self.f0_relative
        )  # the width of ``forward``'s output

    def _frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The floored log-mel ``(B, M, T)``, its loudest bin ``(B,)``, each frame's level (mean log-mel)
        ``(B, T)`` and the present frames ``(B, T)`` (above the floor: not padding or digital silence)."""
        return present_frames(features[:, self.first_bin : self.first_bin + self.n_mels, :], self.floor)

    def noise_level(self, features: torch.Tensor) -> torch.Tensor:
        """The log of the noise estimate's mean power over the bins ``(B,)``, in the features' natural-log
        units: what ``forward`` subtracts with ``denoise`` and an active frame must exceed (for
        ``train.noisestudy`` and the tests; not part of the exported graph)."""
        x, top, energy, present = self._frames(features)
        return self._subtract_noise(x, top, energy, present)[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x, top, energy, present = self._frames(features)
        noise_level = torch.zeros_like(top)
        if self.denoise > 0.0:
            x, noise_level = self._subtract_noise(x, top, energy, present)
            energy = x.mean(dim=1)
        loudest = torch.where(present > 0.5, energy, torch.full_like(energy, -1e9)).amax(dim=1, keepdim=True)
        active = present * (energy > loudest - self.active).to(x.dtype)  # (B, T)
        if self.denoise > 0.0:  # and louder than the noise estimate, after its subtraction
            power = torch.logsumexp(x, dim=1) - math.log(self.n_mels)  # (B, T): log of the frame's mean power
            active = active * (power > noise_level.unsqueeze(1)).to(x.dtype)
        n_active = active.sum(dim=1).clamp(min=1.0)  # (B,)
        w = active.unsqueeze(1)  # (B, 1, T)

        bin_mean, bin_std = _masked_mean_std(x, w)  # (B, M) each
        level = bin_mean.mean(dim=1, keepdim=True)
        pair = active[:, 1:] * active[:, :-1]
        _, delta_std = _masked_mean_std(x[:, :, 1:] - x[:, :, :-1], pair.unsqueeze(1))

        rel = energy - loudest  # (B, T), <= 0 on present frames
        quant = masked_quantiles(rel, present, [0.1, 0.5, 0.9])
        rel_mean, _ = _masked_mean_std(rel, present)
        _, rel_std_active = _masked_mean_std(rel, active)
        share = active.sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
        ltas = bin_mean - level  # (B, M): the window's long-term spectrum relative to its level
        if self.ltas_cepstra > 0:
            basis = self.cepstra
            assert isinstance(basis, torch.Tensor)  # a buffer, for mypy
            ltas = torch.matmul(ltas, basis[: self.ltas_cepstra].to(x.dtype).T)  # (B, K): its DCT coefficients 1..K
        parts = [
            ltas,
            bin_std,
            delta_std,
            quant,
            rel_mean.unsqueeze(1),
            rel_std_active.unsqueeze(1),
            share.unsqueeze(1),
        ]
        extra: list[torch.Tensor] = []
        # each frame's spectrum without its level (the extended statistics and the dynamics read it)
        shape = x - energy.unsqueeze(1) if self.extended or self.dynamics else x
        voicing: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # voiced, F0 mean and deviation
        if self.extended:
            _, shape_std = _masked_mean_std(shape, w)
            level_step_mean, level_step_std = _masked_mean_std((energy[:, 1:] - energy[:, :-1]).abs(), pair)
            bins = torch.arange(self.n_mels, dtype=x.dtype, device=x.device).view(1, -1, 1)
            centroid = (torch.softmax(x, dim=1) * bins).sum(dim=1)  # (B, T), in mel bins
            centroid_mean, centroid_std = _masked_mean_std(centroid, active)
            extra += [
                shape_std,
                level_step_mean.unsqueeze(1),
                level_step_std.unsqueeze(1),
                centroid_mean.unsqueeze(1),
                centroid_std.unsqueeze(1),
                masked_quantiles(rel, active, [0.25, 0.75]),
            ]
        if self.pitch:
            periodicity = features[:, self.pitch_row, :]
            f0 = features[:, self.pitch_row + 1, :]
            voiced = active * ((periodicity - 0.4) / 0.4).clamp(0.0, 1.0)  # (B, T)
            f0_mean, f0_std = _masked_mean_std(f0, voiced)
            voicing = (voiced, f0_mean, f0_std)
            f0_q = masked_quantiles(f0, (voiced > 0.5).to(x.dtype), [0.1, 0.9])
            step_w = voiced[:, 1:] * voiced[:, :-1]
            step_mean, step_std = _masked_mean_std((f0[:, 1:] - f0[:, :-1]).abs(), step_w)
            if self.f0_relative:  # no absolute F0: the percentiles relative to the voiced mean
                parts += [(voiced.sum(dim=1) / n_active).unsqueeze(1), f0_std.unsqueeze(1), f0_q - f0_mean.unsqueeze(1)]
            else:
                parts += [(voiced.sum(dim=1) / n_active).unsqueeze(1), f0_mean.unsqueeze(1), f0_std.unsqueeze(1), f0_q]
            parts += [step_mean.unsqueeze(1), step_std.unsqueeze(1)]
            if self.extended:
                periodicity_mean, periodicity_std = _masked_mean_std(periodicity, active)
                voiced_periodicity, _ = _masked_mean_std(periodicity, voiced)
                seconds = torch.arange(f0.shape[1], dtype=x.dtype, device=x.device).unsqueeze(0) / self.frames_per_s
                time_mean, time_std = _masked_mean_std(seconds.expand_as(f0), voiced)
                covariance = ((seconds - time_mean.unsqueeze(1)) * (f0 - f0_mean.unsqueeze(1)) * voiced).sum(dim=1)
                slope = covariance / voiced.sum(dim=1).clamp(min=1e-6) / (time_std.square() + 1e-3)
                extra += [
                    periodicity_mean.unsqueeze(1),
                    periodicity_std.unsqueeze(1),
                    voiced_periodicity.unsqueeze(1),
                    slope.unsqueeze(1),
                ]
        if self.dynamics:
            extra += self._dynamics(features, x, energy, present, active, shape, pair, voicing)
        if self.voiced_ltas and voicing is not None:
            voiced_mean, _ = _masked_mean_std(x, voicing[0].unsqueeze(1))  # (B, M)
            extra.append(voiced_mean - voiced_mean.mean(dim=1, keepdim=True))
        return torch.cat(parts + extra, dim=1)

    def _subtract_noise(
        self, x: torch.Tensor, top: torch.Tensor, energy: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectral subtraction in the power domain: the noise estimate is the mean spectrum (power, or
        log-mel with ``log_estimate``) of the quietest ``quiet`` share of the present frames; ``denoise``
        times it is subtracted from every frame, and each bin keeps at least the estimate less
        ``DENOISE_FLOOR_DB``. Returns the log-mel after subtraction and the log of the estimate's mean
        power over the bins ``(B,)``, which an active frame must exceed. Relative to the window's loudest
        bin, so a gain changes nothing."""
        threshold = masked_quantiles(energy, present, [self.quiet])  # (B, 1)
        quiet = present * (energy <= threshold + 1e-6).to(x.dtype)  # (B, T)
        top3 = top.view(-1, 1, 1)
        relative = x - top3  # (B, M, T), <= 0
        power = torch.exp(relative)
        if self.log_estimate:  # the mean log-mel of the quiet frames: a geometric mean of their power
            log_noise, _ = _masked_mean_std(relative, quiet.unsqueeze(1))  # (B, M)
            noise = torch.exp(log_noise)
        else:
            noise, _ = _masked_mean_std(power, quiet.unsqueeze(1))  # (B, M)
        kept = torch.maximum(power - self.denoise * noise.unsqueeze(2), noise.unsqueeze(2) * math.exp(self.denoise_floor))
        level = torch.log(noise.mean(dim=1).clamp(min=1e-30)) + top
        return torch.log(kept.clamp(min=1e-30)) + top3, level

    def _dynamics(
        self,
        features: torch.Tensor,
        x: torch.Tensor,
        energy: torch.Tensor,
        present: torch.Tensor,
        active: torch.Tensor,
        shape: torch.Tensor,
        pair: torch.Tensor,
        voicing: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        """Rhythm, modulation and cepstral statistics (module docstring), each ``(B, k)``; ``shape``, ``pair``
        (consecutive active frames) and ``voicing`` (with pitch: voiced weights, F0 mean and deviation) as
        ``forward`` computed them."""
        out: list[torch.Tensor] = []
        for lag in self.level_lags:  # how the level moves over 20-250 ms, pauses included
            std, magnitude = _lagged_change(energy, present, lag)
            out += [std.unsqueeze(1), magnitude.unsqueeze(1)]
        width = self.n_mels // self.bands
        bands = x[:, : width * self.bands, :].reshape(x.shape[0], self.bands, width, x.shape[2]).mean(dim=2)
        for lag in self.band_lags:  # the same per quarter of the mel range, over active frames
            std, _ = _lagged_change(bands, active, lag)
            out.append(std)
        seconds_present = present.sum(dim=1).clamp(min=1.0) / self.frames_per_s
        active_onsets = (active[:, 1:] * (1.0 - active[:, :-1])).sum(dim=1)
        out += [
            (active_onsets / seconds_present).unsqueeze(1),  # bursts of speech per second
            (active.sum(dim=1) / active_onsets.clamp(min=1.0) / self.frames_per_s).unsqueeze(1),  # their length, s
            (1.0 - active.sum(dim=1) / present.sum(dim=1).clamp(min=1.0)).unsqueeze(1),  # pause share
        ]
        for lag in self.flux_lags:  # spectral flux of the level-free frame shape
            flux = (shape[:, :, lag:] - shape[:, :, :-lag]).abs().mean(dim=1)
            flux_mean, flux_std = _masked_mean_std(flux, active[:, lag:] * active[:, :-lag])
            out += [flux_mean.unsqueeze(1), flux_std.unsqueeze(1)]
        basis = self.cepstra
        assert isinstance(basis, torch.Tensor)  # a buffer, for mypy
        cepstra = torch.matmul(basis.to(x.dtype), shape)  # (B, N_CEPSTRA, T)
        _, cepstra_std = _masked_mean_std(cepstra, active.unsqueeze(1))
        _, cepstra_step_std = _masked_mean_std(cepstra[:, :, 1:] - cepstra[:, :, :-1], pair.unsqueeze(1))
        out += [cepstra_std, cepstra_step_std]
        if voicing is not None:
            voiced, f0_mean, f0_std = voicing
            f0 = features[:, self.pitch_row + 1, :]
            hard = (voiced > 0.5).to(x.dtype)
            voiced_onsets = (hard[:, 1:] * (1.0 - hard[:, :-1])).sum(dim=1)
            out += [
                (voiced_onsets / seconds_present).unsqueeze(1),  # voiced stretches per second (a syllable rate)
                (hard.sum(dim=1) / voiced_onsets.clamp(min=1.0) / self.frames_per_s).unsqueeze(1),
            ]
            for lag in self.pitch_lags:  # how F0 moves over 50-250 ms
                std, magnitude = _lagged_change(f0, voiced, lag)
                out += [std.unsqueeze(1), magnitude.unsqueeze(1)]
            level_mean, level_std = _masked_mean_std(energy, voiced)
            covariance = ((energy - level_mean.unsqueeze(1)) * (f0 - f0_mean.unsqueeze(1)) * voiced).sum(dim=1)
            covariance = covariance / voiced.sum(dim=1).clamp(min=1e-6)
            out.append((covariance / (level_std * f0_std + 1e-3)).unsqueeze(1))  # loudness-pitch correlation
        return out


def _bins(value: Any) -> tuple[int, int] | None:
    """The ``bins`` setting: null (every mel bin) or ``[first, stop)``."""
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise ValueError(f"clip_stats: bins is null or [first, stop), two mel bin indices, got {value!r}")
    return int(value[0]), int(value[1])


class ClipStats(nn.Module):
    """Features ``(B, n_mels [+ 2 with pitch], T)`` -> logits ``(B, n_classes)``: standardised window
    statistics through one linear layer, or a bag of one-hidden-layer heads (module docstring)."""

    __constants__ = ["mlp"]

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        s = {**DEFAULTS, **cfg.settings}
        self.statistics = WindowStatistics(
            cfg.n_mels,
            bool(s["pitch"]),
            float(s["floor_db"]),
            float(s["active_db"]),
            bool(s["extended"]),
            bool(s["dynamics"]),
            float(s["denoise"]),
            float(s["denoise_quiet"]),
            str(s["denoise_estimate"]),
            s["ltas_cepstra"],
            bool(s["voiced_ltas"]),
            _bins(s["bins"]),
            bool(s["f0_relative"]),
        )
        n = self.statistics.n_out
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        hidden, heads = int(s["hidden"]), int(s["heads"])
        if hidden < 0 or heads < 1:
            raise ValueError(f"clip_stats: hidden must be >= 0 and heads >= 1, got {hidden} and {heads}")
        self.mlp = hidden > 0
        self.n_heads = heads
        self.log_heads = math.log(heads)
        if self.mlp:
            # every head's hidden units side by side in one layer; the output layer per head as a batched matmul
            self.hidden = nn.Linear(n, heads * hidden)
            self.out_weight = nn.Parameter(torch.zeros(heads, hidden, cfg.n_classes))
            self.out_bias = nn.Parameter(torch.zeros(heads, 1, cfg.n_classes))
        else:
            self.linear = nn.Linear(n, cfg.n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (self.statistics(features) - self.mean) / self.scale
        if self.mlp:
            h = torch.relu(self.hidden(z))  # (B, heads * hidden)
            h = h.reshape(h.shape[0], self.n_heads, -1).transpose(0, 1)  # (heads, B, hidden)
            logps = torch.log_softmax(torch.bmm(h, self.out_weight) + self.out_bias, dim=-1)  # (heads, B, classes)
            return torch.logsumexp(logps, dim=0) - self.log_heads
        return self.linear(z)
