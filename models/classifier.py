"""A loaded model on one backend (ONNX Runtime, TorchScript or eager torch) and ``load_classifier``.

``load_classifier(path, backend, device, threads)`` opens a model directory or file written by
``models.modelformat``, checks that the weights run on the input its embedded config describes and
that every file of a model directory embeds the same config, and returns a ``Classifier``:
``predict(logmel (B, n_mels, T)) -> probabilities (B, n_classes)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig
from emostream.models.modelformat import (
    BACKENDS,
    CHECKPOINT_NAME,
    ONNX_NAME,
    TORCHSCRIPT_NAME,
    ModelFileError,
    ModelSpec,
    example_input,
    load_checkpoint,
    quiet_jit,
    read_onnx_spec,
    read_torchscript,
    resolve_model_path,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class Classifier:
    """A loaded model on one backend: ``predict(logmel (B, n_mels, T)) -> probabilities (B, n_classes)``."""

    backend: str = "?"

    def __init__(self, spec: ModelSpec, path: Path, device: str) -> None:
        self.spec = spec
        self.path = path
        self.device = device
        self.labels: tuple[str, ...] = spec.labels
        self.feature_config: FeatureConfig = spec.feature_config
        self.model_config: ModelConfig = spec.model_config
        self.name = str(spec.meta.get("name", path.stem if path.is_file() else path.name))

    def logits(self, logmel: np.ndarray | torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def predict(self, logmel: np.ndarray | torch.Tensor) -> np.ndarray:
        return softmax(self.logits(logmel))

    def _check_input(self, logmel: np.ndarray | torch.Tensor) -> None:
        shape = tuple(logmel.shape)
        if len(shape) != 3 or shape[1] != self.feature_config.n_rows:
            raise ValueError(f"expected log-mel of shape (B, {self.feature_config.n_rows}, T), got {shape}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} backend={self.backend} device={self.device} labels={self.labels}>"


class TorchClassifier(Classifier):
    """Eager or TorchScript module on CPU or CUDA."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, spec: ModelSpec, path: Path,
                 device: str, backend: str) -> None:
        super().__init__(spec, path, device)
        self.module = module
        self.backend = backend

    @torch.inference_mode()
    def logits(self, logmel: np.ndarray | torch.Tensor) -> np.ndarray:
        self._check_input(logmel)
        x = torch.as_tensor(logmel, dtype=torch.float32).to(self.device)
        return self.module(x).float().cpu().numpy()


class OnnxClassifier(Classifier):
    """ONNX Runtime session (CUDA execution provider when asked for and available)."""

    backend = "onnx"

    def __init__(self, session: Any, spec: ModelSpec, path: Path, device: str) -> None:
        super().__init__(spec, path, device)
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def logits(self, logmel: np.ndarray | torch.Tensor) -> np.ndarray:
        self._check_input(logmel)
        x = logmel.detach().cpu().numpy() if isinstance(logmel, torch.Tensor) else logmel
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def _verify_outputs(classifier: Classifier) -> Classifier:
    """Refuse a model whose weights do not match its embedded config (input mels, output classes)."""
    spec = classifier.spec
    try:
        out = classifier.logits(example_input(spec, batch=1).numpy())
    except ModelFileError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            classifier.path, f"model does not run on the input its config describes ({spec.feature_config.n_rows} feature rows): {first}"
        ) from None
    if out.shape != (1, len(spec.labels)):
        raise ModelFileError(
            classifier.path,
            f"model outputs {out.shape[-1]} classes but its config names {len(spec.labels)} labels",
        )
    if not np.all(np.isfinite(out)):
        raise ModelFileError(classifier.path, "model produces non-finite outputs")
    return classifier


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def load_classifier(
    path: Path | str = "default",
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
) -> Classifier:
    """Load a model directory, ``.ts``/``.onnx`` file or checkpoint for inference on one backend.

    ``auto`` picks ONNX Runtime when it and an ``.onnx`` file are there (3-4x faster than TorchScript
    on the CPU here), else TorchScript, else eager from a checkpoint.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU")
    p = resolve_model_path(path)
    if not p.exists():
        raise ModelFileError(p, "no such file or directory")
    files = _model_files(p)
    if backend == "auto":
        if ONNX_NAME in files and onnxruntime_available():
            backend = "onnx"
        elif TORCHSCRIPT_NAME in files:
            backend = "torchscript"
        elif CHECKPOINT_NAME in files:
            backend = "eager"
        else:
            raise ModelFileError(p, "no loadable model file (model.onnx needs onnxruntime)")
    wanted = {"onnx": ONNX_NAME, "torchscript": TORCHSCRIPT_NAME, "eager": CHECKPOINT_NAME}[backend]
    if wanted not in files:
        raise ModelFileError(p, f"backend {backend!r} needs a {wanted} file, which is not there")
    file = files[wanted]
    if backend == "onnx":
        classifier: Classifier = _load_onnx(file, device, threads)
    elif backend == "torchscript":
        classifier = _load_torchscript(file, device, threads)
    else:
        ckpt = load_checkpoint(file)
        if threads:
            torch.set_num_threads(threads)
        classifier = TorchClassifier(ckpt.build().to(device), ckpt.spec, file, device, "eager")
    _verify_outputs(classifier)
    _check_siblings_agree(files, classifier.spec)
    return classifier


def _model_files(p: Path) -> dict[str, Path]:
    """Map the canonical names to the files a path offers (a directory, or one file by its suffix)."""
    if p.is_dir():
        return {name: p / name for name in (ONNX_NAME, TORCHSCRIPT_NAME, CHECKPOINT_NAME) if (p / name).is_file()}
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return {ONNX_NAME: p}
    if suffix in (".ts", ".jit", ".torchscript"):
        return {TORCHSCRIPT_NAME: p}
    if suffix in (".pt", ".pth", ".ckpt"):
        return {CHECKPOINT_NAME: p}
    raise ModelFileError(p, "unknown model file type (expected a model directory, .onnx, .ts or .pt)")


def _check_siblings_agree(files: dict[str, Path], spec: ModelSpec) -> None:
    """In a model directory, the configs embedded in every file must equal the loaded one."""
    if len(files) < 2:
        return
    readers = {
        ONNX_NAME: read_onnx_spec,
        TORCHSCRIPT_NAME: lambda f: read_torchscript(f, "cpu")[1],
        CHECKPOINT_NAME: lambda f: load_checkpoint(f).spec,
    }
    for name, file in files.items():
        if readers[name](file).to_dict() != spec.to_dict():
            raise ModelFileError(file, "its embedded config differs from the other files in the model directory")


def _load_torchscript(path: Path, device: str, threads: int | None) -> TorchClassifier:
    module, spec = read_torchscript(path, device)
    if threads:
        torch.set_num_threads(threads)
    module.eval()
    try:
        with quiet_jit():
            module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
    except RuntimeError as exc:
        raise ModelFileError(path, f"TorchScript module could not be frozen for inference: {exc}") from None
    return TorchClassifier(module, spec, path, device, "torchscript")


def _load_onnx(path: Path, device: str, threads: int | None) -> OnnxClassifier:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelFileError(
            path, "onnxruntime is not installed: pip install 'emostream[cpu]' (or [gpu]), or use --backend torchscript"
        ) from None
    spec = read_onnx_spec(path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    # No spinning between runs: a streaming server calls the model in small batches, and spinning
    # threads take the CPU from the event loop and the feature extractor.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"ONNX Runtime cannot load it: {first}") from None
    return OnnxClassifier(session, spec, path, "cuda" if providers[0].startswith("CUDA") else "cpu")
