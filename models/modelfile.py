"""Model files, as callers import them: the format (``models.modelformat``) and loading (``models.classifier``).

Kept so that ``from models.modelfile import load_classifier, export_model, ...`` keeps working; the
two jobs live in their own modules.
"""

from __future__ import annotations

from emostream.models.classifier import (
    Classifier,
    OnnxClassifier,
    TorchClassifier,
    load_classifier,
    onnxruntime_available,
    softmax,
)
from emostream.models.modelformat import (
    BACKENDS,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CONFIG_EXTRA,
    DEFAULT_MODEL_DIR,
    FORMAT_VERSION,
    MODEL_FORMAT,
    ONNX_METADATA_KEY,
    ONNX_NAME,
    SHIPPED_MODELS,
    TORCHSCRIPT_NAME,
    Checkpoint,
    ModelFileError,
    ModelSpec,
    export_model,
    load_checkpoint,
    missing_shipped_model,
    quiet_jit,
    resolve_model_path,
    save_checkpoint,
)

__all__ = [
    "BACKENDS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CONFIG_EXTRA",
    "DEFAULT_MODEL_DIR",
    "FORMAT_VERSION",
    "MODEL_FORMAT",
    "ONNX_METADATA_KEY",
    "ONNX_NAME",
    "SHIPPED_MODELS",
    "TORCHSCRIPT_NAME",
    "Checkpoint",
    "Classifier",
    "ModelFileError",
    "ModelSpec",
    "OnnxClassifier",
    "TorchClassifier",
    "export_model",
    "load_checkpoint",
    "load_classifier",
    "missing_shipped_model",
    "onnxruntime_available",
    "quiet_jit",
    "resolve_model_path",
    "save_checkpoint",
    "softmax",
]
