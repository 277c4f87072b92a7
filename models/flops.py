"""Compute cost of a model: FLOPs (2 x multiply-adds) per classification window, and parameter counts.

Counted: matrix products and convolutions, as ``torch.utils.flop_counter.FlopCounterMode`` counts them,
plus an analytic count for recurrent layers (``nn.LSTM``/``nn.GRU``/``nn.RNN``), whose fused kernels the
counter does not see (they are stubbed out while it runs). Element-wise work (activations, normalisation,
pooling, softmax) is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from emostream.models.arch import build_model, count_parameters
from emostream.models.arch.config import ModelConfig
from emostream.models.features import FeatureConfig

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def rnn_flops(rnn: nn.RNNBase, input_shape: tuple[int, ...]) -> int:
    """FLOPs of the input and recurrent matrix products of ``rnn`` on an input of ``input_shape``."""
    if len(input_shape) == 2:
        n_steps = input_shape[0]  # unbatched (T, I)
    else:
        batch, steps = (input_shape[0], input_shape[1]) if rnn.batch_first else (input_shape[1], input_shape[0])
        n_steps = batch * steps
    gates = GATES[rnn.mode]
    dirs = 2 if rnn.bidirectional else 1
    hidden = rnn.hidden_size
    proj = getattr(rnn, "proj_size", 0)
    state = proj if proj > 0 else hidden  # size of the recurrent output h
    macs = 0
    for layer in range(rnn.num_layers):
        in_size = rnn.input_size if layer == 0 else state * dirs
        per_step = gates * hidden * (in_size + state) + (state * hidden if proj > 0 else 0)
        macs += dirs * per_step * n_steps
    return 2 * macs


def _rnn_stub(rnn: nn.RNNBase, counted: list[int]) -> Callable[..., tuple[torch.Tensor, Any]]:
    """A forward with the recurrent layer's output shapes (zeros) that adds its analytic FLOPs to ``counted``.

    The counter does not see the fused recurrent kernels, so they are not run under it at all.
    """

    def forward(x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        counted.append(rnn_flops(rnn, tuple(x.shape)))
        dirs = 2 if rnn.bidirectional else 1
        proj = getattr(rnn, "proj_size", 0)
        out_size = proj if proj > 0 else rnn.hidden_size
        if x.dim() == 2:  # unbatched (T, I)
            out_shape: tuple[int, ...] = (x.shape[0], dirs * out_size)
            state_shape: tuple[int, ...] = (dirs * rnn.num_layers, out_size)
            cell_shape: tuple[int, ...] = (dirs * rnn.num_layers, rnn.hidden_size)
        else:
            batch, steps = (x.shape[0], x.shape[1]) if rnn.batch_first else (x.shape[1], x.shape[0])
            out_shape = (batch, steps, dirs * out_size) if rnn.batch_first else (steps, batch, dirs * out_size)
            state_shape = (dirs * rnn.num_layers, batch, out_size)
            cell_shape = (dirs * rnn.num_layers, batch, rnn.hidden_size)
        state: Any = x.new_zeros(state_shape)
        if rnn.mode == "LSTM":
            state = (state, x.new_zeros(cell_shape))
        return x.new_zeros(out_shape), state

    return forward


def count_flops(model: nn.Module, n_mels: int, n_frames: int) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of ``model`` on one window ``(1, n_mels, n_frames)``
    (``n_mels``: the input's rows, the features' ``n_rows``)."""
    counted_rnn: list[int] = []
    rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    was_training = model.training
    for rnn in rnns:
        rnn.forward = _rnn_stub(rnn, counted_rnn)  # type: ignore[method-assign]
    try:
        x = torch.randn(1, n_mels, n_frames, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.eval()(x)
    finally:
        for rnn in rnns:
            del rnn.forward  # back to the class's forward
        model.train(was_training)
    return int(counter.get_total_flops()) + sum(counted_rnn)


def describe(model_config: ModelConfig, feature_config: FeatureConfig) -> dict[str, Any]:
    """Parameters and FLOPs per classification window of the model ``model_config`` describes."""
    if model_config.n_mels != feature_config.n_mels:
        raise ValueError(f"model expects {model_config.n_mels} mel bins, features give {feature_config.n_mels}")
    model = build_model(model_config, load_weights=False)
    flops = count_flops(model, feature_config.n_rows, feature_config.n_frames)
    return {
        "arch": model_config.arch,
        "params": count_parameters(model),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "n_mels": feature_config.n_mels,
        "n_frames": feature_config.n_frames,
        "window_s": feature_config.window_s,
        "flops_per_window": flops,
        "gflop_per_window": flops / 1e9,
    }
