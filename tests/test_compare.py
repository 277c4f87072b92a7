"""`emostream compare`: groups of evaluation reports -> mean and spread per corpus, changes per perturbation."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from emostream.train.compare import markdown, parse_group, summarise


def report(ua: dict[str, float], phone_drop: dict[str, float] | None = None) -> dict:
    """The shape `emostream evaluate --report` writes (datasets; robustness when --perturb was given)."""
    rep: dict = {"datasets": {k: {"ua": v} for k, v in ua.items()}, "overall": {"ua": statistics.fmean(ua.values())}}
    if phone_drop is not None:
        rep["robustness"] = {
            "clean": {"datasets": {k: {"ua": v} for k, v in ua.items()}},
            "phone": {"datasets": {k: {"ua": v - phone_drop[k]} for k, v in ua.items()}},
        }
    return rep


def test_mean_sd_and_changes_per_group() -> None:
    a = report({"ravdess": 0.50, "urdu": 0.40}, {"ravdess": 0.05, "urdu": 0.10})
    b = report({"ravdess": 0.44, "urdu": 0.30}, {"ravdess": 0.01, "urdu": 0.02})
    s = summarise({"recipe": [a, b], "one": [a]})
    g = s["groups"]["recipe"]
    assert g["runs"] == 2 and s["conditions"] == ["clean", "phone"]
    assert g["clean"]["ravdess"]["mean"] == pytest.approx(0.47)
    assert g["clean"]["ravdess"]["sd"] == pytest.approx(statistics.stdev([0.50, 0.44]))
    assert g["clean"]["mean of corpora"]["mean"] == pytest.approx((0.45 + 0.37) / 2)
    assert g["change"]["phone"]["mean"]["urdu"] == pytest.approx(-0.06)
    assert g["change"]["phone"]["worst_run_corpus"] == pytest.approx(0.10)
    assert s["groups"]["one"]["clean"]["urdu"]["sd"] == 0.0
    text = markdown(s)
    assert "| recipe | 2 | 47.0 ± 4.2 | 35.0 ± 7.1 | 41.0 ± 5.7 |" in text
    assert "| recipe | phone (10.0) | -3.0 | -6.0 | -4.5 |" in text


def test_reports_of_other_commands_are_refused() -> None:
    a = report({"ravdess": 0.5, "urdu": 0.4}, {"ravdess": 0.0, "urdu": 0.0})
    other_corpora = report({"ravdess": 0.5, "nemo": 0.4}, {"ravdess": 0.0, "nemo": 0.0})
    no_perturb = report({"ravdess": 0.5, "urdu": 0.4})
    for bad in (other_corpora, no_perturb):
        with pytest.raises(ValueError, match="same evaluate command"):
            summarise({"g": [a, bad]})
    with pytest.raises(ValueError, match="NAME=REPORT"):
        parse_group("just-a-path.json")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from emostream.train.compare import register_compare

    paths = []
    for i, ua in enumerate((0.5, 0.6)):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(report({"ravdess": ua})))
        paths.append(str(p))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    parser = argparse.ArgumentParser()
    register_compare(parser.add_subparsers())
    md = tmp_path / "t.md"
    args = parser.parse_args(["compare", "--group", f"g={','.join(paths)}", "--markdown", str(md)])
    assert args.func(args) == 0
    assert "| g | 2 | 55.0 ± 7.1 | 55.0 ± 7.1 |" in md.read_text() == capsys.readouterr().out
    args = parser.parse_args(["compare", "--group", f"g={bad}"])
    assert args.func(args) == 2 and "not JSON" in capsys.readouterr().err
