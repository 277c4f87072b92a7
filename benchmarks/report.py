"""Writes a benchmark run out: the JSON (every figure), a Markdown summary for the README, a latency plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

REQUIRED_KEYS: dict[str, tuple[type, ...]] = {
    "single_stream_p50_ms": (float,),
    "single_stream_p99_ms": (float,),
    "capacity_streams": (int,),
    "baseline_capacity_streams": (int,),  # None only when the baseline stage was skipped
    "capacity_ratio": (float, type(None)),  # None when the baseline kept up with no stream, or was skipped
    "model_gflop_per_window": (float,),
    "peak_gflops": (float,),
    "engine_best_fraction_of_peak": (float,),
    "engine": (list,),
    "features": (list,),
    "machine": (dict,),
}


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and infinities become None, tuples lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")


def figure(x: Any, fmt: str = "{:.1f}", missing: str = "n/a") -> str:
    """A figure formatted, or `missing` where there is none (None, or NaN from a stage that did not run)."""
    return missing if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def markdown(r: dict[str, Any]) -> str:
    """The README section: headline table (ours vs baseline), engine table, feature table, the machine."""
    dev = r["devices"][r["device"]]
    cap, bcap = dev["capacity"].get("ours", {}), dev["capacity"].get("baseline", {})
    s1, b1 = dev["single_stream"].get("ours", {}), dev["single_stream"].get("baseline", {})
    bound = f"p99 <= {r['settings']['max_p99_ms']:g} ms, nothing dropped or missing"
    ratio = r["capacity_ratio"]
    gflop_missing = "GFLOP per 5 s window not measured (engine stage skipped)"
    lines = [
        f"### Benchmark ({'quick smoke run: figures are not meaningful' if r['quick'] else 'full run'})",
        "",
        f"Machine: {r['machine_line']}.",
        f"Model: `{r['model']['name']}` ({r['model']['arch']}, {r['model']['parameters']:,} parameters"
        f"{', untrained stand-in of the same size' if r['model']['untrained_standin'] else ''}), "
        f"{figure(r['model_gflop_per_window'], '{:.3f} GFLOP per 5 s window', gflop_missing)}. Hop {r['settings']['hop_s']:g} s, "
        f"{r['settings']['frame_ms']:g} ms frames over loopback WebSocket, VAD: {r['settings']['vad']}; "
        f"each stream runs {r['settings']['ramp_s']:g} s before its windows are timed, then "
        f"{r['settings']['single_s']:g} s (single stream) or {r['settings']['trial_s']:g} s (capacity trials); "
        f"our server: `{r['devices'][r['device']]['capacity'].get('ours', {}).get('server_command', 'n/a')}`. "
        f"Command: `{r['command']}`.",
        "",
        "| | emostream | reference-style baseline | ratio |",
        "|---|---|---|---|",
        f"| single stream latency p50 / p99 (server `latency_ms`) | {figure(s1.get('server_p50_ms'))} / "
        f"{figure(s1.get('server_p99_ms'))} ms | {figure(b1.get('server_p50_ms'))} / {figure(b1.get('server_p99_ms'))} ms | |",
        f"| single stream latency p50 / p99 (client-measured) | {figure(s1.get('client_p50_ms'))} / "
        f"{figure(s1.get('client_p99_ms'))} ms | {figure(b1.get('client_p50_ms'))} / {figure(b1.get('client_p99_ms'))} ms | |",
        f"| real-time streams ({bound}) | {_cap(cap)} | {_cap(bcap)} | "
        f"{figure(ratio, '{:.1f}x')} |",
        f"| server CPU at that load (cores of {r['machine']['logical_cores']}) | "
        f"{figure(cap.get('server_cpu_cores_at_capacity'), '{:.2f}')} | "
        f"{figure(bcap.get('server_cpu_cores_at_capacity'), '{:.2f}')} | |",
        f"| load generator CPU at that load (cores, same machine) | "
        f"{figure(cap.get('client_cpu_cores_at_capacity'), '{:.2f}')} | "
        f"{figure(bcap.get('client_cpu_cores_at_capacity'), '{:.2f}')} | |",
    ]
    if r.get("skipped"):
        lines += ["", f"Stages left out of this run (`--skip`): {', '.join(r['skipped'])}."]
    if r["engine"]:
        lines += _engine_table(r)
    if r.get("archs"):
        from emostream.benchmarks.arch_bench import markdown as archs_markdown

        lines += ["", "Architectures (untrained, shipped feature settings; ONNX Runtime, one thread; "
                  "benchmarks/arch_bench.py):", "", archs_markdown(r["archs"])]
    if r["features"]:
        lines += _feature_table(r)
    lines.append("")
    return "\n".join(lines)


def _engine_table(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Model engine ({r['device']}, `Classifier.predict`; fp32 matmul peak measured in the same run: "
        f"{r['peak_gflops']:.1f} GFLOP/s; best {100 * r['engine_best_fraction_of_peak']:.1f} % of it):",
        "",
        "| backend | threads | batch | p50 ms | p99 ms | windows/s | GFLOP/s | % of machine peak "
        "| % of matmul peak at these threads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["engine"]:
        at_threads = row.get("fraction_of_thread_peak")
        lines.append(f"| {row['backend']} | {row.get('threads', '')} | {row['batch']} | {row['p50_ms']:.2f} | "
                     f"{row['p99_ms']:.2f} | {row['windows_per_s']:.0f} | {row['gflops']:.1f} | "
                     f"{100 * row['fraction_of_peak']:.1f} | {figure(at_threads and 100 * at_threads)} |")
    return lines


def _feature_table(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Features (CPU; x real time = seconds of audio per second of one call's wall time; streams = "
        f"real-time streams those threads could feed at hop {r['settings']['hop_s']:g} s, features alone):",
        "",
        "| feature path | threads | batch | p50 ms | x real time | streams |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["features"]:
        lines.append(f"| {row['name']} | {row.get('threads', '')} | {row['batch']} | {row['p50_ms']:.2f} | "
                     f"{row['audio_s_per_s']:.0f} | {row['streams_at_hop']:.0f} |")
    return lines


def _cap(c: dict[str, Any]) -> str:
    if not c:
        return "not run"
    n = c["capacity_streams"]
    return f"{n}" if c.get("bounded") else f">= {n} (no failing load reached)"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(result), encoding="utf-8")


def plot_latency(result: dict[str, Any], path: Path) -> None:
    """p50 and p99 latency against concurrent streams, ours and the baseline, from the capacity trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = result["devices"][result["device"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    styles = {"ours": ("emostream", "tab:blue"), "baseline": ("reference-style baseline", "tab:red")}
    for key, (label, color) in styles.items():
        trials = sorted(dev["capacity"].get(key, {}).get("trials", []), key=lambda t: t["n"])
        if not trials:
            continue
        n = [t["n"] for t in trials]
        ax.plot(n, [max(t["p50_ms"], 0.1) for t in trials], "o--", color=color, label=f"{label} p50", alpha=0.7)
        ax.plot(n, [max(t["p99_ms"], 0.1) for t in trials], "s-", color=color, label=f"{label} p99")
        bad = [t for t in trials if not t["ok"]]
        if bad:
            ax.plot([t["n"] for t in bad], [max(t["p99_ms"], 0.1) for t in bad], "x", color="black",
                    markersize=9, label=None)
    bound = result["settings"]["max_p99_ms"]
    ax.axhline(bound, color="gray", linestyle=":", linewidth=1)
    ax.text(0.99, bound * 1.08, f"p99 bound {bound:g} ms", color="gray", fontsize=8, ha="right",
            transform=ax.get_yaxis_transform())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time streams (x: trial failed)")
    ax.set_ylabel("latency, ms (last sample in -> estimate out)")
    caps = {k: dev["capacity"][k]["capacity_streams"] for k in styles if k in dev["capacity"]}
    title = (f"Latency vs load, hop {result['settings']['hop_s']:g} s, {result['device']}: capacity "
             + ", ".join(f"{styles[k][0]} {v}" for k, v in caps.items()))
    if result["quick"]:
        title += " (quick smoke run)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.text(0.01, 0.01, result["machine_line"][:150], fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def check_result(result: dict[str, Any]) -> list[str]:
    """Problems with a result's required keys and types ([] when all are there and sane)."""
    problems = []
    skipped = set(result.get("skipped", []))
    may_be_empty = ({"baseline_capacity_streams"} if "baseline" in skipped else set()) | (
        {"model_gflop_per_window", "engine_best_fraction_of_peak"} if "engine" in skipped else set())
    for key, types in REQUIRED_KEYS.items():
        if key in may_be_empty and result.get(key) is None:
            continue
        if key not in result:
            problems.append(f"missing {key}")
        elif isinstance(result[key], bool) or not isinstance(result[key], types):
            problems.append(f"{key} is {type(result[key]).__name__}, expected {'/'.join(t.__name__ for t in types)}")
    return problems
