"""The statistics baseline and the leave-one-corpus-out command on seeded synthetic corpora."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_train_pipeline import ACTORS, SR, synth_clip, write_corpus

from emostream.models.features import FeatureConfig
from emostream.train.baseline import (
    ClipFeatures,
    LogisticBaseline,
    group_columns,
    pitch_track,
    speaker_normalise,
)
from emostream.train.cli import register_baseline, register_crosscorpus


def run(register, argv: list[str]) -> int:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_pitch_track_finds_the_fundamental() -> None:
    t = np.arange(SR) / SR
    x = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 6)).astype(np.float32)
    x[: SR // 4] = 0  # silence is unvoiced
    f0 = pitch_track(0.3 * x, SR)
    voiced = f0[f0 > 0]
    assert abs(np.median(voiced) - 200) < 5 and len(voiced) > 0.6 * len(f0)
    assert np.all(f0[:15] == 0)


def test_logistic_baseline_learns_separable_classes() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    x = rng.standard_normal((150, 5)) + 3 * np.eye(3, 5)[y]
    model = LogisticBaseline(3).fit(x, y)
    assert (model.predict_proba(x).argmax(1) == y).mean() > 0.9


def test_feature_groups_and_speaker_normalisation() -> None:
    assert len(group_columns(64)) == 3 * 64 + 5 + 9
    clip = ClipFeatures(FeatureConfig()).one(synth_clip("03", 1, 0))
    assert clip.shape == (len(group_columns(64)),)  # the groups cover every ClipFeatures column
    assert list(group_columns(4, ["mel_envelope", "mel_std", "mel_delta", "energy"])) == list(range(17, 26))
    no_pitch = group_columns(64, ["pitch"])
    assert len(no_pitch) == 3 * 64 + 5 and no_pitch.max() == 3 * 64 + 4
    with pytest.raises(ValueError, match="unknown feature groups"):
        group_columns(64, ["pitchh"])
    with pytest.raises(ValueError, match="nothing to fit"):
        group_columns(64, ["mel_envelope", "mel_std", "mel_delta", "energy", "pitch"])
    x = np.array([[1.0, 10.0], [3.0, 14.0], [5.0, 0.0], [5.0, 2.0]])
    out = speaker_normalise(x, ["a", "a", "b", "b"])
    np.testing.assert_allclose(out, [[-1.0, -2.0], [1.0, 2.0], [0.0, -1.0], [0.0, 1.0]])


def write_tess(root: Path) -> None:
    """``root/tess/<OAF|YAF>_<emotion>/<spk>_<word>_<emotion>.wav`` with the synthetic voices."""
    for spk, actor in (("OAF", 30), ("YAF", 31)):
        for code, emotion in (("01", "neutral"), ("03", "happy"), ("04", "sad")):
            folder = root / "tess" / f"{spk}_{emotion}"
            folder.mkdir(parents=True, exist_ok=True)
            for take in range(3):
                sf.write(folder / f"{spk}_w{take}_{emotion}.wav", synth_clip(code, actor, take), SR)


def test_baseline_and_crosscorpus_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_corpus(tmp_path / "data", takes=2)
    write_tess(data)
    cache = tmp_path / "cache"
    rep = tmp_path / "base.json"
    argv = ["baseline", "--data", str(data), "--datasets", "ravdess", "--labels", "neutral,happy,sad"]
    assert run(register_baseline, [*argv, "--report", str(rep), "--cache", str(cache)]) == 0
    report = json.loads(rep.read_text())
    assert report["datasets"]["ravdess"]["speakers"] == ["ravdess:17", "ravdess:18", "ravdess:19", "ravdess:20"]
    assert report["datasets"]["ravdess"]["ua"] > 0.8  # pitch and noisiness separate the synthetic classes
    assert report["features"] == "all features"
    # the terminal shows UA per speaker too, each test actor's row with its figure from the JSON
    shown = capsys.readouterr().out
    assert "per speaker" in shown
    for speaker, entry in report["datasets"]["ravdess"]["per_speaker"].items():
        assert any(speaker in line and f"{100 * entry['ua']:.1f}" in line for line in shown.splitlines())
    ablated = tmp_path / "ablated.json"
    assert run(register_baseline, [*argv, "--report", str(ablated), "--cache", str(cache), "--without",
                                   "pitch,mel_envelope,mel_std,mel_delta", "--speaker-norm"]) == 0
    other = json.loads(ablated.read_text())
    assert other["features"] == "without pitch, mel_envelope, mel_std, mel_delta; speaker-normalised"
    assert (report["n_features"], other["n_features"]) == (3 * 64 + 5 + 9, 5)  # energy alone
    assert run(register_baseline, [*argv, "--report", str(ablated), "--without", "loudness"]) == 2
    # --perturb: the same test clips changed as `emostream evaluate --perturb` changes them, statistics recomputed
    perturbed = tmp_path / "perturbed.json"
    assert run(register_baseline, [*argv, "--report", str(perturbed), "--cache", str(cache),
                                   "--perturb", "clean,noise:-10"]) == 0
    rob = json.loads(perturbed.read_text())["robustness"]
    assert list(rob) == ["clean", "noise:-10"] and rob["clean"]["ua"] == report["overall"]["ua"]
    assert rob["noise:-10"]["ua"] < report["overall"]["ua"] - 0.2  # voices buried in pink noise sound like neutral
    assert list(rob["noise:-10"]["datasets"]) == ["ravdess"]
    # the clips whose predicted class each condition changed: none for clean, and UA fell by more than 20
    # points, which takes at least that share of the clips (its classes are balanced here)
    assert rob["clean"]["changed"] == 0 and rob["noise:-10"]["changed"] == rob["noise:-10"]["datasets"]["ravdess"]["changed"]
    assert rob["noise:-10"]["changed"] >= 0.2 * report["overall"]["n"]
    # the terminal's tables: each condition's overall UA with its change from clean, and the changed clips
    shown = capsys.readouterr().out
    noisy = rob["noise:-10"]["ua"]
    overall = next(line for line in shown.splitlines() if "overall" in line and f"{100 * noisy:.1f}" in line)
    assert f"({100 * (noisy - report['overall']['ua']):+.1f})" in overall
    changed_rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in shown.splitlines() if line.count("│") == 4]
    assert ["overall", str(report["overall"]["n"]), str(rob["noise:-10"]["changed"])] in changed_rows
    assert run(register_baseline, [*argv, "--report", str(perturbed), "--perturb", "loud"]) == 2
    out = tmp_path / "loco"
    argv = ["crosscorpus", "--data", str(data), "--datasets", "ravdess,tess", "--out", str(out)]
    assert run(register_crosscorpus, [*argv, "--cache", str(cache)]) == 0
    loco = json.loads((out / "crosscorpus.json").read_text())
    assert list(loco["folds"]) == ["ravdess", "tess"]
    assert loco["folds"]["tess"]["train_corpora"] == ["ravdess"] and loco["folds"]["tess"]["n_test_clips"] == 18
    assert all(0.0 <= f["baseline"]["ua"] <= 1.0 for f in loco["folds"].values())
    assert "| mean |" in (out / "crosscorpus.md").read_text()
    # UA per speaker of the held-out corpus: every speaker of the fold's test clips, each in [0, 1]
    for held, f in loco["folds"].items():
        per = f["baseline"]["per_speaker"]
        assert per and all(s.startswith(f"{held}:") and 0.0 <= v <= 1.0 for s, v in per.items())
    assert len(loco["folds"]["ravdess"]["baseline"]["per_speaker"]) == len(ACTORS)  # every actor is unseen there
    one = tmp_path / "loco_one"  # one fold: tess held out, trained on the rest of --datasets
    argv = ["crosscorpus", "--data", str(data), "--datasets", "ravdess,tess", "--hold-out", "tess", "--out", str(one)]
    assert run(register_crosscorpus, [*argv, "--cache", str(cache)]) == 0
    loco_one = json.loads((one / "crosscorpus.json").read_text())
    assert list(loco_one["folds"]) == ["tess"] and loco_one["folds"]["tess"] == loco["folds"]["tess"]
    assert "| mean (tess only) |" in (one / "crosscorpus.md").read_text()
    argv = ["crosscorpus", "--data", str(data), "--datasets", "ravdess,tess", "--hold-out", "urdu", "--out", str(one)]
    assert run(register_crosscorpus, argv) == 2
    assert run(register_crosscorpus, ["crosscorpus", "--data", str(data), "--datasets", "ravdess,nope", "--out", str(out)]) == 2


def test_crosscorpus_folds_of_the_streaming_statistics_model(tmp_path: Path) -> None:
    """``--deep --arch clip_stats``: each fold fits the statistics baseline's level-invariant streaming form
    (``models.arch.clip_stats``) and scores it with the streamer's windows; an unknown architecture is refused."""
    from emostream.models.modelfile import load_classifier

    data = write_corpus(tmp_path / "data", takes=2)
    write_tess(data)
    out = tmp_path / "loco"
    argv = ["crosscorpus", "--data", str(data), "--datasets", "ravdess,tess", "--hold-out", "tess", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--deep", "--epochs", "1", "--threads", "1"]
    assert run(register_crosscorpus, [*argv, "--arch", "clip_stats", "--adversary", "0.3"]) == 0
    report = json.loads((out / "crosscorpus.json").read_text())
    assert report["deep_settings"]["arch"] == "clip_stats" and report["deep_settings"]["adversary"] == 0.3
    fold = report["folds"]["tess"]
    assert 0.0 <= fold["deep"]["ua"] <= 1.0
    clf = load_classifier(Path(fold["deep"]["model"]))
    assert clf.model_config.arch == "clip_stats" and clf.feature_config.pitch
    assert clf.spec.meta["train_config"]["adversary"] == 0.3  # the fold was trained with the speaker adversary
    assert run(register_crosscorpus, [*argv, "--arch", "vgg16"]) == 2
    # the speaker adversary trains clip_stats folds only: refused before any work otherwise
    refused = tmp_path / "refused"
    assert run(register_crosscorpus, [*argv[:8], str(refused), *argv[9:], "--adversary", "0.3"]) == 2  # deep arch
    assert run(register_crosscorpus, [*argv[:8], str(refused), "--adversary", "0.3"]) == 2  # no --deep
    assert run(register_crosscorpus, [*argv[:8], str(refused), *argv[9:], "--arch", "clip_stats", "--adversary", "-1"]) == 2
    assert not refused.exists()
    # --combine: this run's fold model (clean windows only) and the earlier run's, as one ensemble per fold
    again = tmp_path / "loco_again"
    argv2 = [*argv[:8], str(again), *argv[9:-4], "--epochs", "0", "--threads", "1", "--arch", "clip_stats"]
    assert run(register_crosscorpus, [*argv2, "--combine", str(out)]) == 0
    mixed = json.loads((again / "crosscorpus.json").read_text())
    fold = mixed["folds"]["tess"]
    assert fold["ensemble"]["members"] == [str(again / "without_tess" / "model"), str(out / "without_tess" / "model")]
    assert 0.0 <= fold["ensemble"]["ua"] <= 1.0 and mixed["mean_ua"]["ensemble"] == fold["ensemble"]["ua"]
    assert load_classifier(Path(fold["ensemble"]["model"])).model_config.arch == "ensemble"
    assert "ensemble UA %" in (again / "crosscorpus.md").read_text()
    # a fold with fewer than two models to combine is refused before any work
    assert run(register_crosscorpus, [*argv[:8], str(tmp_path / "x"), "--combine", str(out)]) == 2
    # --seed 2 --split-seed 0: another training draw on the same speaker split, combined with seed 0's folds
    redraw = tmp_path / "loco_s2"
    argv4 = [*argv2[:8], str(redraw), *argv2[9:], "--seed", "2", "--split-seed", "0"]
    assert run(register_crosscorpus, [*argv4, "--combine", str(out)]) == 0
    drawn = json.loads((redraw / "crosscorpus.json").read_text())
    assert drawn["seeds"] == {"training": 2, "split": 0} and mixed["seeds"] == {"training": 0, "split": 0}
    assert drawn["folds"]["tess"]["baseline"] == mixed["folds"]["tess"]["baseline"]  # the same training speakers
    s2 = load_classifier(redraw / "without_tess" / "model").spec.meta
    s0 = load_classifier(out / "without_tess" / "model").spec.meta
    assert s2["seed"] == 2 and s0["seed"] == 0 and s2["split"] == s0["split"] and s2["split"]["seed"] == 0
    # --perturb: the earlier runs' fold models (nothing trained) and the baseline, scored again under each condition
    pert = tmp_path / "loco_perturbed"
    argv3 = [*argv[:8], str(pert), "--cache", str(tmp_path / "cache"), "--threads", "1", "--combine", str(out),
             "--combine", str(again)]
    assert run(register_crosscorpus, [*argv3, "--perturb", "gain:-12,noise:-10"]) == 0
    rob = json.loads((pert / "crosscorpus.json").read_text())
    assert rob["perturbations"] == ["gain:-12", "noise:-10"] and "deep" not in rob["mean_ua"]
    fold = rob["folds"]["tess"]
    assert fold["ensemble"]["ua"] == mixed["folds"]["tess"]["ensemble"]["ua"]  # the same ensemble, clean
    # the ensemble is level-invariant: 12 dB quieter changes no clip's prediction
    assert fold["ensemble"]["robustness"]["gain:-12"] == fold["ensemble"]["ua"]
    assert set(fold["baseline"]["robustness"]) == {"gain:-12", "noise:-10"}
    assert all(0.0 <= v <= 1.0 for c in ("baseline", "ensemble") for v in fold[c]["robustness"].values())
    assert rob["mean_ua_perturbed"]["ensemble"] == fold["ensemble"]["robustness"]  # one fold: its own
    table = (pert / "crosscorpus.md").read_text()
    assert "| held-out corpus | model | clean | gain:-12 | noise:-10 |" in table
    assert f"| tess | ensemble | {100 * fold['ensemble']['ua']:.1f} | {100 * fold['ensemble']['ua']:.1f} (+0.0) |" in table
    # and it counts the clips whose prediction each condition changed: none at -12 dB
    n = fold["n_test_clips"]
    assert fold["ensemble"]["changed"]["gain:-12"] == 0 and 0 <= fold["ensemble"]["changed"]["noise:-10"] <= n
    assert set(fold["baseline"]["changed"]) == {"gain:-12", "noise:-10"}
    assert all(0 <= v <= n for v in fold["baseline"]["changed"].values())
    assert f"| tess | ensemble | {n} | 0 | {fold['ensemble']['changed']['noise:-10']} |" in table
    # per speaker: the spread over the held-out corpus's speakers, and on how many the ensemble beats the baseline
    ens, base = fold["ensemble"]["per_speaker"], fold["baseline"]["per_speaker"]
    assert set(ens) == set(base) and len(ens) >= 2
    above, level = sum(ens[s] > base[s] for s in ens), sum(ens[s] == base[s] for s in ens)
    low, high = 100 * min(ens.values()), 100 * max(ens.values())
    counts = f"{above} / {level} / {len(ens) - above - level}"
    assert f"| tess | ensemble | {len(ens)} | {low:.1f} | " in table and f" | {high:.1f} | {counts} |" in table
    assert run(register_crosscorpus, [*argv3[:-4], "--perturb", "loud"]) == 2  # an unknown condition: refused
    # --combine-narrow: that run's fold models score only narrowband windows; the synthetic clips are
    # wideband, so clean the fold's ensemble scores as its untagged member (the first run's fold model) alone
    switched = tmp_path / "loco_switched"
    argv5 = [*argv[:8], str(switched), "--cache", str(tmp_path / "cache"), "--threads", "1", "--combine", str(out),
             "--combine-narrow", str(again)]
    assert run(register_crosscorpus, argv5) == 0
    fold = json.loads((switched / "crosscorpus.json").read_text())["folds"]["tess"]["ensemble"]
    assert fold["bands"] == [None, "narrow"] and fold["ua"] == report["folds"]["tess"]["deep"]["ua"]
    settings = load_classifier(Path(fold["model"])).model_config.settings
    assert [m.get("band") for m in settings["members"]] == [None, "narrow"] and settings["narrowband"]


def test_crosscorpus_deep_folds_take_the_training_settings(tmp_path: Path) -> None:
    """``--deep`` with ``--feature-settings`` / ``--model-settings`` / ``--augment``: each fold's model is
    trained with them (here the relative pitch model on small features, every clip brought to a drawn
    speech level) and the report records them."""
    from test_train_pipeline import FEATURES, MODEL

    from emostream.models.modelfile import load_classifier

    data = write_corpus(tmp_path / "data", takes=2)
    write_tess(data)
    out = tmp_path / "loco"
    argv = ["crosscorpus", "--data", str(data), "--datasets", "ravdess,tess", "--hold-out", "tess", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--deep", "--epochs", "1", "--threads", "1"]
    features = json.dumps({**FEATURES, "pitch": True})
    model = json.dumps({**MODEL, "pitch_absolute": False})
    augment = json.dumps({"level_dbfs": [-40, -12], "p_speed": 0.0})
    assert run(register_crosscorpus, [*argv, "--feature-settings", features, "--model-settings", model,
                                      "--augment", augment]) == 0
    report = json.loads((out / "crosscorpus.json").read_text())
    settings = report["deep_settings"]
    assert {k: settings[k] for k in ("arch", "model", "features")} == {
        "arch": "bandsplit_bilstm", "model": json.loads(model), "features": json.loads(features)
    }
    assert settings["augment"]["level_dbfs"] == [-40, -12] and settings["augment"]["p_speed"] == 0.0
    assert settings["augment"]["p_noise"] == 0.5  # the rest as `emostream train` has them
    fold_run = json.loads((out / "without_tess" / "report.json").read_text())["train"]["config"]["augment"]
    assert fold_run["level_dbfs"] == [-40, -12] and fold_run["p_speed"] == 0.0  # what the fold trained with
    fold = report["folds"]["tess"]
    assert 0.0 <= fold["deep"]["ua"] <= 1.0 and fold["deep"]["epochs"] == 1
    clf = load_classifier(Path(fold["deep"]["model"]))
    assert clf.feature_config.pitch and clf.feature_config.n_mels == FEATURES["n_mels"]
    assert clf.model_config.settings["pitch"] is True and clf.model_config.settings["pitch_absolute"] is False
    assert clf.model_config.settings["channels"] == MODEL["channels"]
    # settings that are not JSON objects are refused before any work
    bad = tmp_path / "bad"
    assert run(register_crosscorpus, [*argv[:8], str(bad), "--deep", "--model-settings", "[1]"]) == 2
    assert run(register_crosscorpus, [*argv[:8], str(bad), "--deep", "--feature-settings", "{pitch"]) == 2
    assert run(register_crosscorpus, [*argv[:8], str(bad), "--deep", "--augment", '{"p_gain": 0.5, "gian": 1}']) == 2
    assert not bad.exists()
