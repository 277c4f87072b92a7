"""Loading the silero-vad ONNX model (file I/O) and building the ``Vad`` of the core around it."""

from __future__ import annotations

from importlib import resources
from typing import Any

from emostream.streamer.core.vad import SILERO_CHUNK_SAMPLES, Vad, VadConfig

SILERO_MODEL_FILE = "silero_vad.onnx"  # the file silero_vad.load_silero_vad(onnx=True) loads


def make_vad(config: VadConfig, sample_rate_hz: int, hop_samples: int) -> Vad:
    """A ``Vad``, with the silero session loaded when the silero gate is enabled at a rate it supports."""
    wants_session = config.enabled and config.method == "silero" and sample_rate_hz in SILERO_CHUNK_SAMPLES
    return Vad(config, sample_rate_hz, hop_samples, load_silero_session() if wants_session else None)


def load_silero_session(model_file: str = SILERO_MODEL_FILE) -> Any:
    """The silero-vad ONNX model shipped inside the silero-vad wheel (no download), on one CPU thread."""
    import onnxruntime as ort

    path = resources.files("silero_vad.data").joinpath(model_file)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
