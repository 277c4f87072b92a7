"""The model-file contract: checkpoints of plain data and exported TorchScript/ONNX files with their config embedded.

What a model file says about itself (``ModelSpec``: feature settings, model settings, labels), how
each kind of file is written (``save_checkpoint``, ``export_model``) and how its embedded config is
read back and checked (``load_checkpoint``, ``read_torchscript``, ``read_onnx_spec``). Any problem
is one ``ModelFileError``. Running a model is ``models.classifier``.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emostream.models.arch import build_model, uses_pitch
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig

CHECKPOINT_FORMAT = "emostream-checkpoint"
MODEL_FORMAT = "emostream-model"
FORMAT_VERSION = 1
TORCHSCRIPT_NAME = "model.ts"
ONNX_NAME = "model.onnx"
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_EXTRA = "config.json"
ONNX_METADATA_KEY = "emostream"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
FAST_MODEL_DIR = Path(__file__).resolve().parent / "fast"
SHIPPED_MODELS = {"default": DEFAULT_MODEL_DIR, "fast": FAST_MODEL_DIR}
"""Model names that ``--model`` accepts besides paths: ``default`` (the deep model + two ``clip_stats``, the best
transfer to unseen audio) and ``fast`` (the deep model alone, no pitch rows: about 2x the server's capacity)."""
BACKENDS = ("auto", "onnx", "torchscript", "eager")
SPEECH_META_KEY = "speech"
"""Model metadata: True when the model is about speech, so the streamer classifies only the windows its speech
detector passes; False (sound classes, music genres) classifies every window. Absent means True."""



class ModelFileError(Exception):
    """A model file is missing, corrupt, truncated or does not match its embedded config."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"model file {path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence exactly torch.jit's DeprecationWarning (script/trace/save/load), nothing broader."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a model file says about itself besides its weights."""

    feature_config: FeatureConfig
    model_config: ModelConfig
    labels: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.labels) != self.model_config.n_classes:
            raise ValueError(
                f"{len(self.labels)} labels but the model has {self.model_config.n_classes} classes"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels: {self.labels}")
        if self.model_config.n_mels != self.feature_config.n_mels:
            raise ValueError(
                f"model expects {self.model_config.n_mels} mel bins, features give {self.feature_config.n_mels}"
            )
        if uses_pitch(self.model_config) != self.feature_config.pitch:
            raise ValueError(
                f"the model {'expects' if uses_pitch(self.model_config) else 'does not take'} pitch rows, "
                f"the features {'give' if self.feature_config.pitch else 'do not give'} them (feature setting pitch)"
            )

    @property
    def speech_gated(self) -> bool:
        """Whether windows are gated on speech for this model (``SPEECH_META_KEY``; models before it: True)."""
        return bool(self.meta.get(SPEECH_META_KEY, True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": FORMAT_VERSION,
            "feature_config": self.feature_config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "labels": list(self.labels),
            "meta": dict(self.meta),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            feature_config=FeatureConfig.from_dict(dict(data["feature_config"])),
            model_config=ModelConfig.from_dict(dict(data["model_config"])),
            labels=tuple(str(x) for x in data["labels"]),
            meta=dict(data.get("meta", {})),
        )


def _spec_from(path: Path, data: Any, expect_format: str) -> ModelSpec:
    if not isinstance(data, dict):
        raise ModelFileError(path, f"expected a {expect_format} mapping, found {type(data).__name__}")
    if data.get("format") != expect_format:
        raise ModelFileError(path, f"not an {expect_format} file (format={data.get('format')!r})")
    if data.get("version") != FORMAT_VERSION:
        raise ModelFileError(path, f"unsupported {expect_format} version {data.get('version')!r}")
    try:
        return ModelSpec.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"invalid embedded config: {exc}") from None


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path | str, model: nn.Module, spec: ModelSpec) -> Path:
    """Write a training checkpoint of plain data (state dict + configs + labels + meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = spec.to_dict()
    payload["format"] = CHECKPOINT_FORMAT
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class Checkpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    path: Path

    def build(self) -> nn.Module:
        """The eager model with the checkpoint's weights, in eval mode (pretrained files named in the
        settings are not read: the state dict replaces them, and a serving machine need not have them)."""
        model = build_model(self.spec.model_config, load_weights=False)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ModelFileError(self.path, f"weights do not match the embedded model config: {first}") from None
        return model.eval()


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; any problem is one ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a readable emostream checkpoint (corrupt or truncated?): {reason}") from None
    spec = _spec_from(path, data, CHECKPOINT_FORMAT)
    state = data.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(path, "checkpoint has no tensor state_dict")
    return Checkpoint(spec=spec, state_dict=state, path=path)


# ----------------------------------------------------------------------------- export


def example_input(spec: ModelSpec, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, spec.feature_config.n_rows, spec.feature_config.n_frames, generator=gen)


def export_model(checkpoint: Checkpoint | Path | str, out_dir: Path | str, opset: int = 17) -> Path:
    """Write ``out_dir`` with ``model.ts``, ``model.onnx`` and ``checkpoint.pt``, the config embedded in each."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = ckpt.build()
    config_json = ckpt.spec.to_json()
    with quiet_jit():
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(out / TORCHSCRIPT_NAME), _extra_files={CONFIG_EXTRA: config_json})
    _export_onnx(model, ckpt.spec, out / ONNX_NAME, opset)
    torch.save(
        {**ckpt.spec.to_dict(), "format": CHECKPOINT_FORMAT, "state_dict": ckpt.state_dict},
        out / CHECKPOINT_NAME,
    )
    return out


def _export_onnx(model: nn.Module, spec: ModelSpec, path: Path, opset: int) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The legacy exporter is chosen on purpose (the dynamo exporter fails on a dynamic time axis):
        # silence exactly its deprecation notices.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning,
                                module=r"torch\.onnx.*")
        with quiet_jit():
            torch.onnx.export(
                model,
                (example_input(spec),),
                str(path),
                input_names=["logmel"],
                output_names=["logits"],
                dynamic_axes={"logmel": {0: "batch", 2: "frames"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = spec.to_json()
    onnx.save(proto, str(path))


def read_torchscript(path: Path, device: str) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    extra = {CONFIG_EXTRA: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a readable TorchScript model (corrupt or truncated?): {reason}") from None
    raw = extra[CONFIG_EXTRA]
    if not raw:
        raise ModelFileError(path, f"TorchScript file has no embedded {CONFIG_EXTRA}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"embedded config is not valid JSON: {exc}") from None
    return module, _spec_from(path, data, MODEL_FORMAT)


def read_onnx_spec(path: Path) -> ModelSpec:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others from protobuf
        raise ModelFileError(path, f"not a readable ONNX model (corrupt or truncated?): {type(exc).__name__}") from None
    if not proto.graph.node:  # protobuf parses an empty file as an empty model
        raise ModelFileError(path, "not a readable ONNX model (corrupt or truncated?): it holds no graph")
    meta = {p.key: p.value for p in proto.metadata_props}
    if ONNX_METADATA_KEY not in meta:
        raise ModelFileError(path, f"ONNX file has no '{ONNX_METADATA_KEY}' metadata (not an emostream export)")
    try:
        data = json.loads(meta[ONNX_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, f"embedded config is not valid JSON: {exc}") from None
    return _spec_from(path, data, MODEL_FORMAT)


def missing_shipped_model(name: Path | str) -> Path | None:
    """The directory of the shipped model ``name`` (``SHIPPED_MODELS``) when it is missing or empty; None when
    ``name`` names no shipped model or the model is installed."""
    shipped = SHIPPED_MODELS.get(str(name))
    if shipped is None or (shipped.is_dir() and any(shipped.iterdir())):
        return None
    return shipped


def resolve_model_path(path: Path | str) -> Path:
    """A shipped model's name (``SHIPPED_MODELS``: ``default``, ``fast``) -> its directory; other paths as given."""
    missing = missing_shipped_model(path)
    if missing is not None:
        raise ModelFileError(missing, f"the {path} model is not installed")
    return SHIPPED_MODELS.get(str(path), Path(path))
