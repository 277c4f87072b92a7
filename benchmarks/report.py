"""Writes a benchmark run out: the JSON (every figure), a Markdown summary for the README, a latency plot."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import sys
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


def run_header(schema: str, module: str, quick: bool, machine: Any, model: Any) -> dict[str, Any]:
    """The fields every benchmark report opens with: schema, the command that made it, when, the machine
    (``benchmarks.machine``) and the model (``benchmarks.engine_bench.prepare_model``)."""
    return {
        "schema": schema,
        "quick": bool(quick),
        "command": f"python -m {module} " + shlex.join(sys.argv[1:]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine.to_dict(),
        "machine_line": machine.one_line(),
        "model": model.to_dict(),
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
        f"{r['settings']['frame_ms']:g} ms frames over loopback WebSocket, VAD off unless a row says otherwise; "
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
        f"| streams per server core at capacity | {figure(cap.get('streams_per_server_core'), '{:.0f}')} | "
        f"{figure(_per_core(bcap), '{:.0f}')} | |",
    ]
    for vad in ("energy", "silero"):
        c = dev["capacity"].get(f"ours_vad_{vad}")
        if c:
            lines.append(
                f"| real-time streams with `--vad {vad}`{' (as shipped)' if vad == 'silero' else ''}: "
                f"capacity, server cores, streams per core, share of VAD off | {_cap(c)}, "
                f"{figure(c.get('server_cpu_cores_at_capacity'), '{:.2f}')} cores, "
                f"{figure(c.get('streams_per_server_core'), '{:.0f}')} per core, "
                f"{figure(r.get(f'capacity_vad_{vad}_share'), '{:.0%}')} | | |")
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
    if r.get("vad"):
        lines += _vad_table(r["vad"])
    if r.get("ingest"):
        lines += _ingest_table(r["ingest"])
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


def _vad_table(v: dict[str, Any]) -> list[str]:
    agree = {a["variant"]: a["agreement_with_reference"] for a in v["agreement"]}
    counts = sorted({row["streams"] for row in v["rows"]})
    lines = [
        "",
        f"Speech gate (`vad` stage): CPU ms per stream per second of audio, windows processed in batches of "
        f"at most {v['max_batch']} as the server does; hop {v['hop_s']:g} s; {v['audio']}. Agreement: share "
        f"of windows whose speech decision equals the reference's ({v['reference_variant']}: every 32-ms chunk). "
        f"The default: {v['default_variant']}.",
        "",
        "| gate | " + " | ".join(f"{n} stream{'s' if n > 1 else ''}" for n in counts) + " | agreement |",
        "|---|" + "---:|" * (len(counts) + 1),
    ]
    for name in dict.fromkeys(row["variant"] for row in v["rows"]):
        cells = {row["streams"]: row["cpu_ms_per_stream_s"] for row in v["rows"] if row["variant"] == name}
        label = name + (" (default)" if name == v["default_variant"] else "")
        lines.append(f"| {label} | " + " | ".join(figure(cells.get(n), "{:.3f}") for n in counts) + " | "
                     + (figure(100 * agree[name], "{:.1f} %") if name in agree else "") + " |")
    return lines


def _ingest_table(g: dict[str, Any]) -> list[str]:
    srv = g.get("server", {})
    lines = ["", "Ingest (`ingest` stage): our server, VAD off, "
             f"`{srv.get('server_command', 'n/a')}`:", "",
             "| frames | streams | server CPU (cores) | messages/s | server CPU per message, all in (us) |",
             "|---:|---:|---:|---:|---:|"]
    for run in srv.get("runs", []):
        lines.append(f"| {run['frame_ms']:g} ms | {run['streams']} | {run['server_cpu_cores']:.2f} | "
                     f"{run['messages_per_s']:.0f} | {run['server_cpu_us_per_message_all_in']:.1f} |")
    if srv.get("problems"):
        lines += ["", f"No per-message / per-window split from these runs: {'; '.join(srv['problems'])}."]
    lines += ["", f"Solved over the two runs (same windows/s, 5x the messages): "
              f"{figure(srv.get('server_cpu_us_per_message'))} us of server CPU per message and "
              f"{figure(srv.get('server_cpu_ms_per_window'), '{:.2f}')} ms per window; messages are "
              f"{figure(srv.get('message_share_at_20ms') and 100 * srv['message_share_at_20ms'], '{:.0f}')} % "
              "of the server's CPU at 20-ms frames.", "",
              f"Where one 20-ms message ({g['message_bytes']} bytes) goes, each step timed alone (CPU us, median "
              "of 5 repeats); the rest of the per-message figure above is the event loop, transport and "
              "recv/send machinery:", "",
              "| step | us |", "|---|---:|"]
    for name, p in g["per_message"].items():
        lines.append(f"| {name} | {p['p50_us']:.2f} |")
    lines.append(f"| what the server runs per message (websockets_parse + intake_feed) | {g['per_message_sum_us']:.2f} |")
    for name, p in g["per_window"].items():
        lines.append(f"| per window: {name} | {p['p50_us']:.1f} |")
    return lines


def _per_core(c: dict[str, Any]) -> float | None:
    cores = c.get("server_cpu_cores_at_capacity") if c else None
    return c["capacity_streams"] / cores if cores else None


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
    styles = {"ours": ("emostream", "tab:blue"), "ours_vad_energy": ("emostream, energy VAD", "tab:orange"),
              "ours_vad_silero": ("emostream, silero VAD", "tab:green"),
              "baseline": ("reference-style baseline", "tab:red")}
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
