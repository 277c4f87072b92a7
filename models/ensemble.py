"""Combine trained models into one ensemble model file (``emostream ensemble``).

The ensemble (``models.arch.ensemble``) outputs the mean of its members' class probabilities; it is
exported like any model (TorchScript, ONNX, checkpoint), so the streamer, ``emostream evaluate`` and
the benchmarks run it unchanged. Members must agree on everything that makes their outputs
comparable and their evaluation honest: feature settings (but the pitch rows: members that take them
and members that do not can be combined, the latter given the mel rows only), labels, label mapping and the speaker
split (an ensemble of models that held out different speakers would have heard some "held-out"
speakers in training). Costs add up: two members cost twice one member per window.

``bands`` tags members ``wide`` or ``narrow`` (``models.arch.ensemble``): then the ensemble holds a
narrowband detector whose bins ``narrowband_gate`` derives from the features (above ``NARROW_ABOVE_HZ``;
the telephone band ``TELEPHONE_HZ``), and each window is scored by the untagged members and those of its
band.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emostream.models.arch import uses_pitch
from emostream.models.arch.config import ModelConfig
from emostream.models.arch.ensemble import BANDS, member_configs
from emostream.models.features import FeatureConfig, mel_edges_hz
from emostream.models.modelformat import (
    CHECKPOINT_NAME,
    Checkpoint,
    ModelFileError,
    ModelSpec,
    export_model,
    load_checkpoint,
)

# Per-run facts kept for each member under meta["members"]; the rest of the meta must agree or is the first's.
MEMBER_FACTS = ("name", "command", "seed", "best_epoch", "epochs_run", "train_seconds", "time", "metrics")
MUST_AGREE = ("datasets", "label_map", "split")
NARROW_ABOVE_HZ = 4100.0
"""The narrowband detector's high bins: those whose filter starts at or above this (a channel sampled at
8 kHz carries nothing above 4 kHz)."""
TELEPHONE_HZ = (300.0, 3400.0)
"""The narrowband detector's reference bins: the filters lying wholly within the telephone band."""
NARROW_MAX_LOG_FLOOR = 1e-12
"""The highest absolute log floor of the features (power) a narrowband detector accepts: through a telephone
line the upper bins fall 50-100 dB under the band, which a higher floor would hide (the recipe's features
have 1e-14, ``train.recipe.ROBUST_FEATURE_SETTINGS``)."""
NARROW_THRESHOLD_DB = -55.0
NARROW_WIDTH_DB = 2.5


def narrowband_gate(
    fc: FeatureConfig, threshold_db: float = NARROW_THRESHOLD_DB, width_db: float = NARROW_WIDTH_DB
) -> dict[str, Any]:
    """The ``narrowband`` setting of an ensemble for features ``fc``: the mel bins starting at or above
    ``NARROW_ABOVE_HZ`` against those wholly within ``TELEPHONE_HZ``; raises ValueError where the features
    have none of either."""
    if fc.log_floor > NARROW_MAX_LOG_FLOOR:
        raise ValueError(
            f"a narrowband detector needs the features' absolute log floor far below speech (log_floor <= "
            f"{NARROW_MAX_LOG_FLOOR:g}; these have {fc.log_floor:g}, which hides how empty the upper bins are)"
        )
    edges = mel_edges_hz(fc).tolist()  # n_mels + 2 edges: filter i spans edges[i] to edges[i + 2]
    low, high = TELEPHONE_HZ
    band = [i for i in range(fc.n_mels) if edges[i] >= low and edges[i + 2] <= high]
    above = [i for i in range(fc.n_mels) if edges[i] >= NARROW_ABOVE_HZ]
    if not band or not above:
        raise ValueError(
            f"the features ({fc.n_mels} mel bins, {fc.f_min_hz:g}-{fc.f_max_hz:g} Hz) need bins within "
            f"{low:g}-{high:g} Hz and above {NARROW_ABOVE_HZ:g} Hz for a narrowband detector"
        )
    return {
        "high_bins": [above[0], fc.n_mels],
        "band_bins": [band[0], band[-1] + 1],
        "threshold_db": float(threshold_db),
        "width_db": float(width_db),
    }


def checkpoint_path(path: Path | str) -> Path:
    """A model directory (its ``checkpoint.pt``) or a checkpoint file."""
    p = Path(path)
    return p / CHECKPOINT_NAME if p.is_dir() else p


def _split_key(split: Any) -> Any:
    """The part of a recorded split that decides who is unseen: its test, validation and training speakers."""
    if not isinstance(split, dict):
        return split
    return {k: sorted(split.get(k) or []) for k in ("test", "val", "train")}


def _members_of(mc: ModelConfig) -> list[tuple[dict[str, Any], str]]:
    """A model's members as ensemble settings, each with the prefix of its weights in the model's state dict:
    an ensemble's own members (so ensembles of ensembles stay a plain mean), else the model itself."""
    if mc.arch == "ensemble":
        return [(dict(m), f"members.{j}.") for j, m in enumerate(mc.settings["members"])]
    member: dict[str, Any] = {"arch": mc.arch, "settings": dict(mc.settings)}
    if mc.fold:
        member["fold"] = [list(g) for g in mc.fold]
    return [(member, "")]


def _rekeyed(state: dict[str, torch.Tensor], prefix: str, to: str = "") -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix``, with ``prefix`` replaced by ``to``."""
    return {to + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def combine(
    checkpoints: list[Checkpoint],
    name: str = "ensemble",
    command: str = "",
    bands: dict[int, str] | None = None,
    threshold_db: float | None = None,
) -> Checkpoint:
    """One ensemble checkpoint from at least two trained ones (raises ValueError when they do not fit together).

    ``bands``: member index (in the combined list, an ensemble's members counted one by one) -> ``wide`` or
    ``narrow``; tags that members of a combined ensemble already carry are kept unless ``bands`` names them.
    ``threshold_db`` the detector's threshold (default: a combined ensemble's, else ``NARROW_THRESHOLD_DB``)."""
    if len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two models")
    first = checkpoints[0].spec
    members: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] = {}
    for ckpt in checkpoints:
        spec = ckpt.spec
        where = f"{ckpt.path}"
        if dataclasses.replace(spec.feature_config, pitch=False) != dataclasses.replace(first.feature_config, pitch=False):
            raise ValueError(f"{where}: feature settings differ from {checkpoints[0].path}'s")
        if spec.labels != first.labels:
            raise ValueError(f"{where}: labels {list(spec.labels)} differ from {list(first.labels)}")
        for key in MUST_AGREE:
            norm = _split_key if key == "split" else (lambda v: v)
            if norm(first.meta.get(key)) != norm(spec.meta.get(key)):
                raise ValueError(
                    f"{where}: its {key!r} differs from {checkpoints[0].path}'s; members must be trained on the "
                    "same corpora, labels and speaker split (else a held-out speaker may be one a member trained on)"
                )
        if spec.speech_gated != first.speech_gated:
            raise ValueError(f"{where}: one model classifies speech windows only, the other every window")
        for member, prefix in _members_of(spec.model_config):
            state.update(_rekeyed(ckpt.state_dict, prefix, f"members.{len(members)}."))
            members.append(member)
    for i, band in (bands or {}).items():
        if not 0 <= i < len(members):
            raise ValueError(f"member {i} tagged {band}: the ensemble has members 0-{len(members) - 1}")
        if band not in BANDS:
            raise ValueError(f"member {i}: band is one of {', '.join(BANDS)}, got {band!r}")
        members[i] = {**members[i], "band": band}
    settings: dict[str, Any] = {"members": members}
    if any("band" in m for m in members):
        earlier = [c.spec.model_config.settings.get("narrowband") for c in checkpoints]
        gate = next((g for g in earlier if g), None) or narrowband_gate(first.feature_config)
        if threshold_db is not None:
            gate = {**gate, "threshold_db": float(threshold_db)}
        settings["narrowband"] = gate
    elif threshold_db is not None:
        raise ValueError("a narrowband threshold needs members tagged wide or narrow")
    config = ModelConfig("ensemble", first.model_config.n_classes, first.model_config.n_mels, settings)
    meta = {k: v for k, v in first.meta.items() if k not in MEMBER_FACTS and k not in ("epoch", "augment_stats")}
    meta["name"] = name
    if command:
        meta["command"] = command
    meta["members"] = [
        {"path": str(c.path), **{k: c.spec.meta[k] for k in MEMBER_FACTS if k in c.spec.meta}} for c in checkpoints
    ]
    seconds = [c.spec.meta.get("train_seconds") for c in checkpoints]
    if all(isinstance(s, int | float) for s in seconds):
        meta["train_seconds"] = float(sum(seconds))  # type: ignore[arg-type]
    features = dataclasses.replace(first.feature_config, pitch=any(c.spec.feature_config.pitch for c in checkpoints))
    spec = ModelSpec(features, config, first.labels, meta)
    ensemble = Checkpoint(spec=spec, state_dict=state, path=Path(name))
    ensemble.build()  # the weights fit the config (raises ModelFileError otherwise)
    return ensemble


def parse_model_arg(model: Path | str) -> tuple[Path, list[int] | None]:
    """``PATH`` or ``PATH@I,J``: a model, or only members ``I, J`` (counted from 0) of an ensemble model."""
    text = str(model)
    path, at, picks = text.rpartition("@")
    if not at or Path(text).exists() or not re.fullmatch(r"\d+(,\d+)*", picks):
        return Path(text), None
    return Path(path), [int(i) for i in picks.split(",")]


def pick_members(ckpt: Checkpoint, picks: list[int]) -> list[Checkpoint]:
    """The members ``picks`` of an ensemble checkpoint, each as its own model (weights unchanged; the
    feature rows it reads; its own facts from the ensemble's ``meta["members"]``), ready for ``combine``."""
    mc = ckpt.spec.model_config
    where = f"{ckpt.path}@{','.join(map(str, picks))}"
    if mc.arch != "ensemble":
        raise ValueError(f"{where}: members can only be picked from an ensemble; this model is one {mc.arch}")
    configs = member_configs(mc)
    if any(not 0 <= i < len(configs) for i in picks) or len(set(picks)) != len(picks):
        raise ValueError(f"{where}: the ensemble has members 0-{len(configs) - 1}, each picked at most once")
    facts = ckpt.spec.meta.get("members")
    out = []
    for i in picks:
        prefix = f"members.{i}."
        state = _rekeyed(ckpt.state_dict, prefix)
        meta = dict(ckpt.spec.meta)
        if isinstance(facts, list) and len(facts) == len(configs):
            meta.update({k: v for k, v in facts[i].items() if k in MEMBER_FACTS})
            meta["members"] = [facts[i]]
        # the pitch rows only where the member reads them (a mel-only member takes the mel rows)
        features = dataclasses.replace(ckpt.spec.feature_config, pitch=uses_pitch(configs[i]))
        spec = ModelSpec(features, configs[i], ckpt.spec.labels, meta)
        out.append(Checkpoint(spec=spec, state_dict=state, path=Path(f"{ckpt.path}@{i}")))
    return out


def write_ensemble(
    models: list[Path | str],
    out_dir: Path | str,
    name: str = "",
    command: str = "",
    bands: dict[int, str] | None = None,
    threshold_db: float | None = None,
    model_bands: Sequence[str | None] = (),
) -> Path:
    """Combine the model directories or checkpoints ``models`` (``PATH@I,J``: only those members of an
    ensemble) and export the ensemble to ``out_dir``. One ``PATH@I,J`` alone writes those members on their
    own (one member as its own model file, weights unchanged). ``bands`` and ``threshold_db`` as ``combine``
    takes them; ``model_bands`` (one per model, ``None`` for untagged) tags every member of a model."""
    out = Path(out_dir)
    checkpoints = []
    picked = False
    bands = dict(bands or {})
    n_members = 0
    for k, model in enumerate(models):
        path, picks = parse_model_arg(model)
        ckpt = load_checkpoint(checkpoint_path(path))
        try:
            added = [ckpt] if picks is None else pick_members(ckpt, picks)
        except ValueError as exc:
            raise ModelFileError(path, str(exc)) from None
        checkpoints += added
        count = sum(len(_members_of(c.spec.model_config)) for c in added)
        if k < len(model_bands) and model_bands[k] is not None:
            bands.update({n_members + j: str(model_bands[k]) for j in range(count)})
        n_members += count
        picked = picked or picks is not None
    if len(checkpoints) == 1 and picked and not bands:
        only = checkpoints[0]
        only.spec.meta.update({"name": name or out.name, **({"command": command} if command else {})})
        return export_model(only, out)
    try:
        ensemble = combine(checkpoints, name=name or out.name, command=command, bands=bands, threshold_db=threshold_db)
    except ValueError as exc:
        raise ModelFileError(out, str(exc)) from None
    return export_model(ensemble, out)
