"""Model engine benchmark: latency and windows/s per backend and batch size, FLOPs per window, fraction of peak.

Also resolves the model under test (``prepare_model``): the shipped default model, a given path, or,
while ``models/default/`` is not there yet, an untrained ``bandsplit_bilstm`` at its default settings
(the same architecture and size, hence the same cost) exported once into ``.cache/benchmarks/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.benchmarks.machine import Repeats, percentiles_ms, time_calls
from emostream.models.modelfile import Classifier, ModelFileError, load_classifier, resolve_model_path

BACKENDS = ("eager", "torchscript", "onnx")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCH_SIZES = (1, 4, 16)
REPO_ROOT = Path(__file__).resolve().parent.parent
STANDIN_DIR = REPO_ROOT / ".cache" / "benchmarks" / "standin-bandsplit_bilstm"
STANDIN_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")


@dataclass(frozen=True, slots=True)
class ModelUnderTest:
    """The model directory the benchmark runs, and what it is."""

    path: Path
    name: str
    arch: str
    parameters: int
    window_s: float
    standin: bool  # True: an untrained stand-in of the default architecture

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name, "arch": self.arch, "parameters": self.parameters,
                "window_s": self.window_s, "untrained_standin": self.standin}


def _export_standin(out_dir: Path) -> None:
    """An untrained bandsplit_bilstm at default settings, seeded, exported with models.modelfile."""
    from emostream.models.arch import ModelConfig, build_model
    from emostream.models.features import FeatureConfig
    from emostream.models.modelfile import ModelSpec, export_model, save_checkpoint

    torch.manual_seed(0)
    mc = ModelConfig(arch="bandsplit_bilstm", n_classes=len(STANDIN_LABELS), n_mels=FeatureConfig().n_mels)
    model = build_model(mc).eval()
    spec = ModelSpec(FeatureConfig(), mc, STANDIN_LABELS, {"name": "untrained-standin"})
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")  # two runs at once must not mix files
    ckpt = save_checkpoint(tmp / "trained.pt", model, spec)
    export_model(ckpt, tmp)
    ckpt.unlink()
    try:
        tmp.rename(out_dir)
    except OSError:  # another run finished first: use its (identical) export
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_model(model: str) -> ModelUnderTest:
    """``"default"`` (falling back to the untrained stand-in while it is missing) or a model path."""
    standin = False
    if model == "default":
        try:
            path = resolve_model_path("default")
        except ModelFileError:
            path, standin = STANDIN_DIR, True
            if not all((path / f).is_file() for f in ("model.ts", "model.onnx", "checkpoint.pt")):
                _export_standin(path)
    else:
        path = Path(model)
    clf = load_classifier(path, backend="eager")
    module = clf.module  # type: ignore[attr-defined]
    return ModelUnderTest(
        path=path,
        name=clf.name,
        arch=clf.model_config.arch,
        parameters=sum(p.numel() for p in module.parameters()),
        window_s=clf.feature_config.window_s,
        standin=standin,
    )


# ----------------------------------------------------------------------------- FLOPs


def _rnn_flops(module: nn.RNNBase, x_shape: Sequence[int]) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of an LSTM/GRU/RNN over ``x_shape``; pointwise work left out."""
    batch, steps = (x_shape[0], x_shape[1]) if module.batch_first else (x_shape[1], x_shape[0])
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    dirs = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    total = 0
    in_size = module.input_size
    for _ in range(module.num_layers):
        total += dirs * steps * batch * 2 * gates * hidden * (in_size + hidden)
        in_size = hidden * dirs
    return total


def count_model_flops(module: nn.Module, n_rows: int, n_frames: int) -> dict[str, Any]:
    """FLOPs (2 per multiply-add) of one window ``(1, n_rows, n_frames)`` (the mel bins, plus the pitch rows
    for a model whose features have them; the features' own cost is not counted).

    Convolutions and matrix products as ``torch.utils.flop_counter.FlopCounterMode`` counts them (the
    rule ``models/flops.py`` states), recurrent layers analytically. The recurrent layers are replaced by
    a stub of the same output shape while the counter runs: the counter does not see their fused
    kernels, and on torch 2.13 (CPU) tracing ``aten.lstm`` through it decomposes the LSTM step by
    step and takes minutes (``models.flops.count_flops`` runs into exactly that).
    """
    from torch.utils.flop_counter import FlopCounterMode

    rnn_flops = 0
    originals: dict[nn.RNNBase, Any] = {}

    def stub(rnn: nn.RNNBase) -> Any:
        def forward(x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
            nonlocal rnn_flops
            rnn_flops += _rnn_flops(rnn, tuple(x.shape))
            batch, steps = (x.shape[0], x.shape[1]) if rnn.batch_first else (x.shape[1], x.shape[0])
            out_dim = rnn.hidden_size * (2 if rnn.bidirectional else 1)
            shape = (batch, steps, out_dim) if rnn.batch_first else (steps, batch, out_dim)
            return x.new_zeros(shape), None

        return forward

    for m in module.modules():
        if isinstance(m, nn.RNNBase):
            originals[m] = m.forward
            m.forward = stub(m)  # type: ignore[method-assign]
    was_training = module.training
    try:
        x = torch.randn(1, n_rows, n_frames, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module.eval()(x)
    finally:
        for m, fwd in originals.items():
            m.forward = fwd  # type: ignore[method-assign]
        module.train(was_training)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    if rnn_flops:
        by_op["rnn (analytic)"] = rnn_flops
    return {
        "flop_per_window": int(counter.get_total_flops()) + rnn_flops,
        "method": "torch.utils.flop_counter (conv, matmul) + analytic recurrent matmuls",
        "by_op": by_op,
    }


# ----------------------------------------------------------------------------- latency table


def bench_backend(
    clf: Classifier,
    batch_sizes: Sequence[int],
    *,
    quick: bool,
    flop_per_window: int,
    peak_gflops: float,
) -> list[dict[str, Any]]:
    """``predict`` (what the engine calls: input copy, model, softmax) timed per batch size."""
    cfg = clf.feature_config
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        x = rng.standard_normal((batch, cfg.n_rows, cfg.n_frames), dtype=np.float32) - 5.0
        # TorchScript's profiling executor specialises on the first calls of each shape: warm up >= 3
        reps = Repeats.pick(quick, warmup=3 if quick else 5, full=(15, 400, 2.0), smoke=(3, 20, 0.25))
        times = time_calls(partial(clf.predict, x), reps, clf.device)
        stats = percentiles_ms(times)
        windows_per_s = batch / (stats["p50_ms"] / 1e3)
        achieved = flop_per_window * windows_per_s / 1e9
        rows.append({
            "backend": clf.backend,
            "device": clf.device,
            "batch": batch,
            "p50_ms": stats["p50_ms"],
            "p99_ms": stats["p99_ms"],
            "repeats": stats["n"],
            "windows_per_s": windows_per_s,
            "gflops": achieved,
            "fraction_of_peak": achieved / peak_gflops if peak_gflops > 0 else 0.0,
        })
    return rows


def run_engine(model_path: Path, device: str, *, quick: bool, peak_gflops: float,
               thread_counts: Sequence[int | None] = (None,),
               thread_peaks_gflops: dict[int, float] | None = None) -> dict[str, Any]:
    """Every backend at every batch size on one device, with the model's FLOPs per window.

    ``thread_counts``: CPU threads for the backend (None: its default, all cores); each adds a set of rows.
    ``fraction_of_peak`` is against the machine's peak ``peak_gflops`` (all threads);
    ``fraction_of_thread_peak`` against the matmul peak at the row's own thread count, when given.
    """
    batch_sizes = QUICK_BATCH_SIZES if quick else BATCH_SIZES
    eager = load_classifier(model_path, backend="eager", device="cpu")
    cfg = eager.feature_config
    flops = count_model_flops(eager.module, cfg.n_rows, cfg.n_frames)  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    default_threads = torch.get_num_threads()
    for threads in thread_counts if device == "cpu" else (None,):
        for backend in BACKENDS:
            try:
                clf = load_classifier(model_path, backend=backend, device=device, threads=threads)
            except (ModelFileError, ValueError) as exc:
                skipped[backend] = str(exc)
                continue
            if device.startswith("cuda") and clf.device != "cuda":
                skipped[backend] = "no CUDA execution provider for this backend"
                continue
            try:
                for row in bench_backend(clf, batch_sizes, quick=quick, flop_per_window=flops["flop_per_window"],
                                         peak_gflops=peak_gflops):
                    row["threads"] = threads or default_threads
                    thread_peak = (thread_peaks_gflops or {}).get(row["threads"])
                    row["fraction_of_thread_peak"] = row["gflops"] / thread_peak if thread_peak else None
                    rows.append(row)
            finally:
                torch.set_num_threads(default_threads)  # load_classifier sets torch's global thread count
    best = max(rows, key=lambda r: r["windows_per_s"]) if rows else None
    return {
        "device": device,
        "flops": flops,
        "gflop_per_window": flops["flop_per_window"] / 1e9,
        "peak_gflops": peak_gflops,
        "rows": rows,
        "skipped": skipped,
        "best": best,
        "best_fraction_of_peak": best["fraction_of_peak"] if best else 0.0,
    }


def rescale_to_peak(engine: dict[str, Any], peak_gflops: float, thread_peaks_gflops: dict[int, float]) -> None:
    """Recompute every fraction of peak in a ``run_engine`` result for better peak measurements."""
    engine["peak_gflops"] = peak_gflops
    for row in engine["rows"]:
        row["fraction_of_peak"] = row["gflops"] / peak_gflops if peak_gflops > 0 else 0.0
        thread_peak = thread_peaks_gflops.get(row["threads"])
        row["fraction_of_thread_peak"] = row["gflops"] / thread_peak if thread_peak else None
    engine["best_fraction_of_peak"] = engine["best"]["fraction_of_peak"] if engine["best"] else 0.0
