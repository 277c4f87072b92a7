"""`emostream compare`: one table from several `emostream evaluate` reports, runs grouped by recipe.

One training run decides little here: the seed alone moves RAVDESS's 240 test clips by ~6 points and
URDU's 74 by ~15 (docs/results.md). A recipe is compared as a group of runs that differ only in
``--seed``: per corpus the mean UA over the group and its standard deviation, the mean of the
corpora, and for each perturbation of the reports the change from clean, averaged the same way.
Every report must come from the same command on the same clips (same speakers filter, same
perturbations); the table says how many runs each group has.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from emostream.train.report import table_head


def register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="tabulate `emostream evaluate` reports, runs grouped by recipe: mean and spread over seeds",
        description="Read evaluation reports (JSON of `emostream evaluate --report`) and print one Markdown "
        "table: per group (a recipe, its seeds) and corpus the mean UA and its standard deviation over the "
        "group's runs, the mean of the corpora, and for each perturbation the mean change from clean.",
        epilog="example: emostream compare --group cmn=runs/s1.json,runs/s2.json --group gain=runs/g1.json,"
        "runs/g2.json --markdown cmp.md",
    )
    p.add_argument(
        "--group",
        action="append",
        required=True,
        metavar="NAME=REPORT[,REPORT...]",
        help="a named group of reports (repeat for each group); a single report is a group of one",
    )
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.set_defaults(func=_run_compare)


def parse_group(text: str) -> tuple[str, list[Path]]:
    name, sep, paths = text.partition("=")
    if not sep or not name.strip() or not paths.strip():
        raise ValueError(f"--group {text!r}: expected NAME=REPORT[,REPORT...]")
    return name.strip(), [Path(p.strip()) for p in paths.split(",") if p.strip()]


def read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such report") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("datasets"), dict):
        raise ValueError(f"{path}: not an `emostream evaluate` report (no 'datasets')")
    return report


def _conditions(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """condition -> corpus -> UA; 'clean' from the report's own scores when it has no robustness part."""
    rob = report.get("robustness") or {}
    if rob:
        return {c: {k: float(v["ua"]) for k, v in r["datasets"].items()} for c, r in rob.items()}
    return {"clean": {k: float(v["ua"]) for k, v in report["datasets"].items()}}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per group: clean UA per corpus (mean, sd, n), the mean of the corpora per run, and per condition
    the change from clean per corpus and on the corpus mean (averaged over runs)."""
    first = _conditions(next(iter(groups.values()))[0])
    corpora = list(first["clean"])
    conditions = list(first)
    out: dict[str, Any] = {"corpora": corpora, "conditions": conditions, "groups": {}}
    for name, reports in groups.items():
        per_run = [_conditions(r) for r in reports]
        for i, run in enumerate(per_run):
            if list(run) != conditions or any(set(run[c]) != set(corpora) for c in conditions):
                raise ValueError(
                    f"group {name!r}, report {i + 1}: other corpora or perturbations than the first report "
                    f"({sorted(run)} vs {sorted(conditions)}); compare reports of the same evaluate command"
                )
        g: dict[str, Any] = {"runs": len(per_run), "clean": {}, "change": {}}
        for corpus in corpora:
            m, sd = _mean_sd([run["clean"][corpus] for run in per_run])
            g["clean"][corpus] = {"mean": m, "sd": sd}
        m, sd = _mean_sd([statistics.fmean(run["clean"][c] for c in corpora) for run in per_run])
        g["clean"]["mean of corpora"] = {"mean": m, "sd": sd}
        for cond in conditions[1:]:
            change = {
                corpus: statistics.fmean(run[cond][corpus] - run["clean"][corpus] for run in per_run)
                for corpus in corpora
            }
            change["mean of corpora"] = statistics.fmean(
                statistics.fmean(run[cond][c] - run["clean"][c] for c in corpora) for run in per_run
            )
            worst = max(abs(run[cond][c] - run["clean"][c]) for run in per_run for c in corpora)
            g["change"][cond] = {"mean": change, "worst_run_corpus": worst}
        out["groups"][name] = g
    return out


def markdown(summary: dict[str, Any]) -> str:
    corpora = [*summary["corpora"], "mean of corpora"]
    lines = [
        "Clean UA %, mean ± standard deviation over each group's runs:",
        "",
        "| group | runs | " + " | ".join(corpora) + " |",
        "|---|---:|" + "---:|" * len(corpora),
    ]
    for name, g in summary["groups"].items():
        cells = [f"{100 * g['clean'][c]['mean']:.1f} ± {100 * g['clean'][c]['sd']:.1f}" for c in corpora]
        lines.append(f"| {name} | {g['runs']} | " + " | ".join(cells) + " |")
    conditions = summary["conditions"][1:]
    if conditions:
        lines += table_head(
            "Change from clean, points, mean over each group's runs (worst corpus of any run in brackets):",
            ["group", "condition"],
            corpora,
        )
        for name, g in summary["groups"].items():
            for cond in conditions:
                ch = g["change"][cond]
                cells = [f"{100 * ch['mean'][c]:+.1f}" for c in corpora]
                lines.append(f"| {name} | {cond} ({100 * ch['worst_run_corpus']:.1f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_compare(args: argparse.Namespace) -> int:
    try:
        groups: dict[str, list[dict[str, Any]]] = {}
        for text in args.group:
            name, paths = parse_group(text)
            if name in groups:
                raise ValueError(f"group {name!r} given twice")
            groups[name] = [read_report(p) for p in paths]
        summary = summarise(groups)
    except ValueError as exc:
        print(f"emostream compare: {exc}", file=sys.stderr)
        return 2
    text = markdown(summary)
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
