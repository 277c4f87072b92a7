"""The evaluation report for people: a Rich table of scores and robustness, and Markdown of the whole report."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def table_head(title: str, text_columns: list[str], number_columns: list[str]) -> list[str]:
    """A titled Markdown table's first lines: left-aligned text columns, then right-aligned numbers."""
    head = "| " + " | ".join([*text_columns, *number_columns]) + " |"
    return ["", title, "", head, "|" + "---|" * len(text_columns) + "---:|" * len(number_columns)]


def table_lines(title: str, text_columns: list[str], number_columns: list[str], rows: list[list[str]]) -> list[str]:
    """A titled Markdown table (``table_head``) with one line per row of cells."""
    return [*table_head(title, text_columns, number_columns), *("| " + " | ".join(row) + " |" for row in rows)]


def print_table(console: Console, title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A titled Rich table, every column right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_summary(report: dict[str, Any], console: Console) -> None:
    """A small Rich table of UA / WA / macro-F1 per data set."""
    from rich.table import Table

    table = Table(title=f"scores ({report.get('speakers', 'all speakers')})")
    for col in ("data set", "n", "UA %", "WA %", "macro-F1 %", "restricted UA %"):
        table.add_column(col, justify="right")
    rows = [*report["datasets"].items(), ("overall", report["overall"])]
    for name, d in rows:
        r = d.get("restricted")
        table.add_row(
            name,
            str(d["n"]),
            f"{100 * d['ua']:.1f}",
            f"{100 * d['wa']:.1f}",
            f"{100 * d['macro_f1']:.1f}",
            f"{100 * r['ua']:.1f}" if r else "",
        )
    console.print(table)
    print_speakers(report, console)
    if report.get("robustness"):
        print_robustness(report["robustness"], console)
        print_changed(report, console)
    skipped = {k: v for k, v in report.get("skipped", {}).items() if v}
    if skipped:
        console.print(f"skipped (labels the model lacks): {skipped}")


SPEAKER_ROWS_SHOWN = 40
"""The terminal lists UA per speaker up to this many speakers; the JSON and Markdown always hold them all."""


def speaker_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per corpus and speaker: clips, the speaker's classes and UA over them; none in reports written
    before ``per_speaker`` existed."""
    return [
        [corpus, speaker, str(s["n"]), str(s["classes"]), f"{100 * s['ua']:.1f}"]
        for corpus, d in report["datasets"].items()
        for speaker, s in d.get("per_speaker", {}).items()
    ]


def print_speakers(report: dict[str, Any], console: Console) -> None:
    """UA per speaker (a corpus's UA pools its speakers, so one speaker can decide it)."""
    rows = speaker_rows(report)
    if len(rows) > SPEAKER_ROWS_SHOWN:
        console.print(f"UA per speaker: {len(rows)} speakers, in the JSON report and --markdown")
    elif rows:
        columns = ["data set", "speaker", "clips", "classes", "UA %"]
        print_table(console, "UA % per speaker (over the speaker's own classes)", columns, rows)


def print_robustness(
    rob: dict[str, Any],
    console: Console,
    clean: dict[str, Any] | None = None,
    title: str = "robustness: UA % per condition (change from clean)",
) -> None:
    """UA % per condition (columns) and corpus (rows), with the change from clean in brackets: from the
    ``clean`` condition, or without one from ``clean`` (a report: ``ua`` and ``datasets``' ``ua``)."""
    rows = [[corpus, *cells] for corpus, cells in robustness_rows(rob, clean)]
    print_table(console, title, ["data set", *rob], rows)


def print_changed(report: dict[str, Any], console: Console) -> None:
    """How many clips each condition changed the prediction of, per corpus (when the report counts them)."""
    names, rows = changed_rows(report)
    if rows:
        title = "robustness: clips whose predicted class changed (one clip moves UA by at most)"
        print_table(console, title, ["data set", "clips", *names], rows)


def changed_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The perturbed conditions' names and, per corpus then overall, the clips, the most one clip moves
    the corpus's UA (points) and each condition's count of changed predictions; no rows when the report
    does not count them (reports written before the counts existed)."""
    rob = report.get("robustness") or {}
    names = [name for name in rob if name != "clean"]
    if not names or any("changed" not in rob[name] for name in names):
        return names, []
    rows = []
    for corpus, d in report["datasets"].items():
        step = d.get("one_clip_ua")
        clips = f"{d['n']} ({100 * step:.1f})" if step is not None else str(d["n"])
        rows.append([corpus, clips, *[str(rob[name]["datasets"][corpus]["changed"]) for name in names]])
    rows.append(["overall", str(report["overall"]["n"]), *[str(rob[name]["changed"]) for name in names]])
    return names, rows


def robustness_rows(rob: dict[str, Any], clean: dict[str, Any] | None = None) -> list[tuple[str, list[str]]]:
    """Per corpus, then overall: one cell per condition, ``UA`` or ``UA (change from clean)``; the clean
    figures are the ``clean`` condition's, or without one ``clean``'s (``ua`` and ``datasets``' ``ua``)."""
    corpora = list(next(iter(rob.values()))["datasets"]) if rob else []
    base = rob.get("clean", clean)
    rows = []
    for corpus in [*corpora, "overall"]:
        cells = []
        for name in rob:
            ua = rob[name]["ua"] if corpus == "overall" else rob[name]["datasets"][corpus]["ua"]
            ref = (base["ua"] if corpus == "overall" else base["datasets"][corpus]["ua"]) if base else None
            delta = f" ({100 * (ua - ref):+.1f})" if ref is not None and name != "clean" else ""
            cells.append(f"{100 * ua:.1f}{delta}")
        rows.append((corpus, cells))
    return rows


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown: scores per corpus, the robustness table, one confusion matrix per corpus."""
    lines = [
        f"Speakers: {report.get('speakers', 'all')}; model `{report['model']['name']}` "
        f"({report['model']['arch']}, {report['model']['backend']}).",
        "",
        "| corpus | clips | UA % | WA % | macro-F1 % | restricted UA % (own classes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, d in [*report["datasets"].items(), ("overall", report["overall"])]:
        r = d.get("restricted")
        restricted = f"{100 * r['ua']:.1f} ({len(r['labels'])} classes)" if r else "-"
        lines.append(
            f"| {name} | {d['n']} | {100 * d['ua']:.1f} | {100 * d['wa']:.1f} | {100 * d['macro_f1']:.1f} | "
            f"{restricted} |"
        )
    speakers = speaker_rows(report)
    if speakers:
        lines += table_lines(
            "UA % per speaker, over the speaker's own classes (a corpus's UA pools its speakers' clips per class):",
            ["corpus", "speaker"],
            ["clips", "classes", "UA %"],
            speakers,
        )
    rob = report.get("robustness")
    if rob:
        lines += table_lines(
            "UA % under each condition (change from clean):",
            ["corpus"],
            list(rob),
            [[corpus, *cells] for corpus, cells in robustness_rows(rob)],
        )
        names, rows = changed_rows(report)
        if rows:
            lines += table_lines(
                "Clips whose predicted class each condition changed (in brackets: the most one clip's "
                "prediction moves the corpus's UA, points):",
                ["corpus"],
                ["clips", *names],
                rows,
            )
    for name, d in report["datasets"].items():
        labels = d["labels"]
        lines += [
            "",
            f"**{name}** (rows true, columns predicted; speakers {', '.join(d.get('speakers', []))})",
            "",
            "| true \\ pred | " + " | ".join(label[:4] for label in labels) + " | recall % |",
            "|---|" + "---:|" * (len(labels) + 1),
        ]
        for i, row in enumerate(d["confusion"]):
            total = sum(row)
            if not total:
                continue
            lines.append(
                f"| {labels[i]} | " + " | ".join(str(v) for v in row) + f" | {100 * row[i] / total:.1f} |"
            )
    return "\n".join(lines) + "\n"
