"""Where `clip_stats`' noise estimate lands, per corpus: under the speech on clean clips, and against the
true noise under a known noise.

``python -m emostream.train.noisestudy --data ../shared/data`` draws ``--clips`` clips per corpus, puts
each in a window as the evaluation does (end-aligned, zero padding before it), and for each noise
estimate of ``models.arch.clip_stats`` (``denoise_estimate`` ``mean`` and ``log``) reports two figures
in dB, median and 10th..90th percentile over the clips:

- *under the speech*: the speech's mean power (frames within 20 dB of the loudest) less the estimate,
  on the clean clip. Larger is better: a small figure means speech was taken for noise;
- *error in noise*: the estimate less the true noise's mean power over the same frames, with the
  evaluation's pink noise added at ``--snr`` dB over the active speech (``train.perturb``).

The features are those of ``--model`` (the shipped default unless named). Written for
``docs/results.md`` ("A log-mel noise estimate").
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from emostream.models.arch.clip_stats import DENOISE_ESTIMATES, WindowStatistics
from emostream.models.arch.layers import DB_TO_LN
from emostream.models.features import LogMel
from emostream.models.modelformat import ModelFileError, load_checkpoint, resolve_model_path
from emostream.models.windows import fit_window
from emostream.train.corpora import load_corpora
from emostream.train.dataset import load_audio, to_float
from emostream.train.perturb import Perturbation

SPEECH_DB = 20.0
"""Frames within this many dB of the clean window's loudest frame are the speech the figures compare with."""


def mean_power(x: torch.Tensor, frames: torch.Tensor | None = None) -> float:
    """Mean power (natural log) over every mel bin of the chosen frames (default: all) of one ``(M, T)`` log-mel."""
    chosen = x if frames is None else x[:, frames]
    return float(torch.logsumexp(chosen, dim=(0, 1)) - math.log(chosen.numel()))


def estimate_figures(
    clean: torch.Tensor, noisy: torch.Tensor, noise_only: torch.Tensor, modules: dict[str, WindowStatistics]
) -> dict[str, tuple[float, float]]:
    """For each estimate (``modules``: one ``WindowStatistics`` per ``denoise_estimate``): (dB under the
    speech on the clean window, dB error against the true noise on the noisy one). Each tensor is one
    window's ``(M, T)`` log-mel."""
    energy = clean.mean(dim=0)
    speech = energy > energy.max() - SPEECH_DB * DB_TO_LN
    speech_level = mean_power(clean, speech)
    noise_level = mean_power(noise_only, speech)
    out: dict[str, tuple[float, float]] = {}
    for estimate, module in modules.items():
        clean_estimate, noisy_estimate = module.noise_level(torch.stack([clean, noisy])).tolist()
        out[estimate] = ((speech_level - clean_estimate) / DB_TO_LN, (noisy_estimate - noise_level) / DB_TO_LN)
    return out


def _summary(values: list[float]) -> str:
    return f"{np.median(values):.1f} ({np.percentile(values, 10):.1f}..{np.percentile(values, 90):.1f})"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emostream.train.noisestudy",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="folder of corpora (e.g. ../shared/data)")
    p.add_argument("--datasets", default="tess,ravdess,nemo,urdu", help="comma-separated corpora")
    p.add_argument("--clips", type=int, default=40, help="clips drawn per corpus")
    p.add_argument("--snr", type=float, default=10.0, help="SNR of the added pink noise, dB over active speech")
    p.add_argument("--model", default="default", help="model whose features are used (directory or name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips drawn")
    p.add_argument("--cache", type=Path, default=None, help="decoded-audio cache (default .cache/emostream)")
    args = p.parse_args(argv)
    if args.clips < 1:
        p.error("--clips must be at least 1")
    torch.set_num_threads(1)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        spec = load_checkpoint(resolve_model_path(args.model) / "checkpoint.pt").spec
        clips, _ = load_corpora(args.data, names)
    except (OSError, ValueError, ModelFileError) as exc:  # a missing folder, an unknown corpus, a bad model file
        print(f"noisestudy: {exc}", file=sys.stderr)
        return 2
    cfg = spec.feature_config
    features = LogMel(cfg)
    modules = {e: WindowStatistics(cfg.n_mels, True, 60.0, 30.0, denoise=1.0, denoise_estimate=e) for e in DENOISE_ESTIMATES}
    window_samples = int(round(cfg.window_s * cfg.sample_rate_hz))
    condition = Perturbation("noise", args.snr)
    rng = np.random.default_rng(args.seed)

    def log_mel(audio: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            wave = torch.from_numpy(fit_window(audio.astype(np.float32), window_samples))[None]
            return features(wave)[0, : cfg.n_mels]

    print(
        "| corpus | clips | estimate | under the speech, clean (dB) | error in noise "
        f"{args.snr:g} dB (dB) |\n|---|---:|---|---:|---:|"
    )
    for name in names:
        own = [c for c in clips if c.corpus == name]
        if not own:
            print(f"noisestudy: no clips of {name} under {args.data}", file=sys.stderr)
            continue
        chosen = [own[i] for i in rng.choice(len(own), min(args.clips, len(own)), replace=False)]
        figures: dict[str, list[tuple[float, float]]] = {e: [] for e in DENOISE_ESTIMATES}
        # decoded as the evaluation decodes them: mono, at the features' rate, through the decoded-audio cache
        for i, decoded in enumerate(load_audio(chosen, cfg.sample_rate_hz, args.cache, Console(stderr=True))):
            audio = to_float(decoded)
            noisy = condition.apply(audio, cfg.sample_rate_hz, seed=i)
            for estimate, pair in estimate_figures(log_mel(audio), log_mel(noisy), log_mel(noisy - audio), modules).items():
                figures[estimate].append(pair)
        for estimate, pairs in figures.items():
            if pairs:
                under, error = [a for a, _ in pairs], [b for _, b in pairs]
                print(f"| {name} | {len(pairs)} | {estimate} | {_summary(under)} | {_summary(error)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
