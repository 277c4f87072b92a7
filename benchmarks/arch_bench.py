"""What each architecture costs per 5-s window: parameters, GFLOP, and windows/s (ONNX Runtime, one thread).

The default model beside the reference systems' shapes (Cnn14, ResNet18/50, ResNeXt50_32x4d,
DenseNet121/161), each untrained (cost does not depend on the weights) at the shipped feature
settings, exported once into ``.cache/benchmarks/arch-<name>/`` through ``models.modelfile``. One
intra-op thread and hop 1 s, so ``windows_per_s`` at batch 16 is also an upper bound on real-time
streams per core for the model alone (features, VAD and I/O cost more; the capacity stage measures
the whole server for the default model).
"""

from __future__ import annotations

import os
import shutil
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostream.benchmarks.machine import Repeats, percentiles_ms, time_calls
from emostream.models.features import FeatureConfig
from emostream.train.config import ROBUST_MODEL_SETTINGS

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache" / "benchmarks"
N_LABELS = 7
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "default (bandsplit_bilstm)": ("bandsplit_bilstm", dict(ROBUST_MODEL_SETTINGS["bandsplit_bilstm"])),
    "cnn14": ("cnn14", {}),
    "resnet18": ("resnet", {"variant": "resnet18"}),
    "resnet50": ("resnet", {"variant": "resnet50"}),
    "resnext50_32x4d": ("resnet", {"variant": "resnext50_32x4d"}),
    "densenet121": ("densenet", {"variant": "densenet121"}),
    "densenet161": ("densenet", {"variant": "densenet161"}),
}
QUICK = ("default (bandsplit_bilstm)", "resnet18")
BATCHES = (1, 16)


def export_arch(name: str) -> Path:
    """The exported untrained model of ``ARCHS[name]`` (made once, then reused from the cache)."""
    from emostream.models.arch import build_model
    from emostream.models.arch.config import ModelConfig
    from emostream.models.modelfile import ModelSpec, export_model, save_checkpoint

    arch, settings = ARCHS[name]
    out = CACHE / f"arch-{name.split(' ')[0]}"
    if all((out / f).is_file() for f in ("model.onnx", "checkpoint.pt")):
        return out
    torch.manual_seed(0)
    fc = FeatureConfig()
    cfg = ModelConfig(arch, N_LABELS, fc.n_mels, settings)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        model = build_model(cfg).eval()
    spec = ModelSpec(fc, cfg, tuple(f"c{i}" for i in range(N_LABELS)), {"name": f"untrained-{name}"})
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    export_model(save_checkpoint(tmp / "trained.pt", model, spec), tmp)
    (tmp / "trained.pt").unlink()
    try:
        tmp.rename(out)
    except OSError:  # another run finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_archs(*, quick: bool) -> dict[str, Any]:
    """One row per architecture: params, GFLOP per window, p50 ms and windows/s at batch 1 and 16."""
    from emostream.models.flops import describe
    from emostream.models.modelfile import load_classifier

    rows = []
    threads = torch.get_num_threads()
    try:
        for name in QUICK if quick else tuple(ARCHS):
            path = export_arch(name)
            clf = load_classifier(path, backend="onnx", threads=1)
            cost = describe(clf.model_config, clf.feature_config)
            fc = clf.feature_config
            row: dict[str, Any] = {"name": name, "arch": cost["arch"], "settings": clf.model_config.settings,
                                   "params": cost["params"], "gflop_per_window": cost["gflop_per_window"],
                                   "backend": clf.backend, "threads": 1}
            rng = np.random.default_rng(0)
            for batch in BATCHES:
                x = rng.standard_normal((batch, fc.n_mels, fc.n_frames), dtype=np.float32) - 5.0
                reps = Repeats.pick(quick, warmup=2, full=(5, 60, 3.0), smoke=(2, 5, 0.5))
                stats = percentiles_ms(time_calls(partial(clf.predict, x), reps, clf.device))
                row[f"p50_ms_batch{batch}"] = stats["p50_ms"]
                row[f"windows_per_s_batch{batch}"] = batch / (stats["p50_ms"] / 1e3)
            rows.append(row)
    finally:
        torch.set_num_threads(threads)  # load_classifier sets torch's global thread count
    return {"window_s": FeatureConfig().window_s, "rows": rows}


def markdown(archs: dict[str, Any]) -> str:
    """The table for the README / docs."""
    lines = [
        f"| model | parameters | GFLOP per {archs['window_s']:g}-s window | ms per window (batch 1) | "
        "windows/s per core (batch 16) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in archs["rows"]:
        lines.append(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['gflop_per_window']:.2f} | "
                     f"{r['p50_ms_batch1']:.1f} | {r['windows_per_s_batch16']:.0f} |")
    return "\n".join(lines)
