"""``python -m benchmarks``: latency and throughput of emostream, side by side with the reference-style pipeline."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("out") / "benchmarks"
TARGETS = {"single_stream_p99_ms": 15.0, "capacity_streams": 200, "capacity_ratio": 20.0,
           "streams_per_server_core": 570.0, "capacity_vad_silero_share": 0.8}
STAGES = ("features", "engine", "archs", "vad", "ingest", "ours", "baseline")
VAD_MODES = ("none", "energy", "silero")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Measure emostream against the reference-style pipeline on this machine, and write the figures.

  1. features  seconds of audio per second: whole-window LogMel (batched), incremental per-hop
               log-mel (streamer.core.frames), librosa melspectrogram + power_to_db per window;
               torch at 1 thread and at all cores
  2. engine    per backend (eager, torchscript, onnx), at all cores and at 1 thread, and batch
               size 1..64: latency p50/p99, windows/s; FLOPs per window; achieved FLOP/s as a
               fraction of the fp32 matmul peak measured in the same run (torch.mm 2048x2048,
               all threads, best of 5, before and after the engine runs; the better is kept)
     archs     the default model beside the reference systems' shapes (Cnn14, ResNet18/50,
               ResNeXt50_32x4d, DenseNet121/161), untrained: parameters, GFLOP per 5-s window,
               ms per window and windows/s per core (ONNX Runtime, 1 thread, batch 1 and 16;
               benchmarks/arch_bench.py)
  3. vad       CPU per stream-second of the speech gate at 1, 16 and 128 streams, batched as the
               server batches (benchmarks/vad_bench.py): energy; silero on every chunk; silero at
               strides 1, 2, 4, 8 above its -60 dBFS floor (the default: stride 4); and how often
               each silero setting's speech decision agrees with silero on every chunk
  4. ingest    server CPU per WebSocket message and per window (100 streams at 20- and at 100-ms
               frames into `emostream serve --no-vad`), and the CPU of each step of one message
               (websockets' parsing, audio_frames, rate limit, push) and of one window's
               publication, timed alone (benchmarks/ingest_bench.py)
  5. ours      one real-time stream (20 ms frames) into a real `emostream serve` on loopback:
               latency_ms p50/p99 as the server reports it and as the client measures it; then
               capacity: most concurrent real-time streams with p99 <= 500 ms, nothing dropped or
               missing, by exponential search then bisection; server and load-generator CPU at
               that N, and streams per server core. Once per --vad mode (default: none, energy,
               silero; the server as shipped runs silero)
  6. baseline  5 again against benchmarks.baseline (librosa + eager PyTorch per window, no
               batching, no VAD), the same model weights and load generator; our ratio to it
               (VAD off on both sides)

Every timing warms up first, repeats, and reports percentiles; the machine (CPU model, cores,
torch/onnxruntime versions, OS, load average) is printed and stored. The load generator runs
on the same machine as the server and its CPU use is reported. CUDA paths run when torch sees
a GPU (or with --device cuda) and are skipped otherwise.""",
        epilog="--quick (3-5 minutes) checks that the harness works; its figures mean nothing. "
        "Run the full benchmark on a quiet machine: about 45 minutes (--only vad,ingest: about 4). "
        "To try a server setting, e.g. "
        "single-threaded inference: --serve-args \"--threads 1\" --serve-env OMP_NUM_THREADS=1.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: short trials, few batch sizes, capped search")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT / "benchmark.json", help="all figures (JSON)")
    p.add_argument("--md", type=Path, default=DEFAULT_OUT / "benchmark.md", help="Markdown summary for the README")
    p.add_argument("--plot", type=Path, default=DEFAULT_OUT / "latency.png", help="latency vs streams (PNG)")
    p.add_argument("--model", default="default",
                   help="'default' (models/default; an untrained bandsplit_bilstm stand-in while it is missing), "
                   "'fast' (models/fast, the deep model alone) or a model directory / file")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="only this device (default: the CPU, and CUDA when torch sees a GPU)")
    p.add_argument("--hop-s", type=float, default=1.0, help="seconds between a stream's windows (default 1)")
    p.add_argument("--max-p99-ms", type=float, default=500.0, help="capacity criterion (default 500)")
    p.add_argument("--frame-ms", type=float, default=20.0, help="audio per WebSocket message (default 20)")
    p.add_argument("--single-s", type=float, default=None, help="single-stream run length (default 60; quick 4)")
    p.add_argument("--trial-s", type=float, default=None, help="capacity trial length (default 20; quick 3)")
    p.add_argument("--ramp-s", type=float, default=None,
                   help="seconds each stream runs before its windows are timed (default: the model's window, "
                   "5 s: the start-up windows are padded and computed from scratch; quick 0)")
    p.add_argument("--max-streams", type=int, default=2048, help="upper end of the capacity search")
    p.add_argument("--client-procs", type=int, default=None,
                   help="load-generator processes (default: one per 200 streams)")
    p.add_argument("--vad", default=",".join(VAD_MODES),
                   help="our server's speech gates to measure, comma-separated from none, energy, silero "
                   "(default all three; 'none' classifies every window, as the baseline does, and is the "
                   "headline compared with the baseline)")
    p.add_argument("--ingest-streams", type=int, default=None,
                   help="streams of the ingest stage's server runs (default 100; quick 8)")
    p.add_argument("--backend", default="auto", help="our server's inference backend (default auto)")
    p.add_argument("--serve-args", default="",
                   help="more options for our `emostream serve`, one string, e.g. \"--threads 1\"")
    p.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment for our server only (repeatable), e.g. OMP_NUM_THREADS=1")
    p.add_argument("--skip", default="", help=f"comma-separated stages to leave out: {','.join(STAGES)}")
    p.add_argument("--only", default="", help="comma-separated stages to run, the others left out (e.g. vad,ingest)")
    return p


def log(msg: str) -> None:
    print(msg, flush=True)


def _servers(args: argparse.Namespace, model_path: Path, device: str, skip: set[str]) -> dict[str, Any]:
    """Single stream and capacity for our server and the baseline server on one device."""
    from emostream.benchmarks.capacity import SearchSettings, run_capacity
    from emostream.benchmarks.e2e import baseline_command, ours_command, single_stream, warm_up
    from emostream.benchmarks.serverproc import ServerProcess

    quick = args.quick
    single_s, trial_s, ramp_s = args.single_s, args.trial_s, args.ramp_s
    search = (SearchSettings(start=1, growth=4.0, max_n=args.max_streams, max_trials=3) if quick
              else SearchSettings(start=1, growth=2.0, max_n=args.max_streams, max_trials=24,
                                  confirm_failures=True))
    out: dict[str, Any] = {"single_stream": {}, "capacity": {}}
    commands = {server_key(vad): ours_command(model_path, args.hop_s, vad=vad, backend=args.backend, device=device,
                                              max_streams=args.max_streams + 64, extra=shlex.split(args.serve_args))
                for vad in args.vad_modes}
    commands["baseline"] = baseline_command(model_path, args.hop_s, device=device)
    ours_env = dict(kv.split("=", 1) for kv in args.serve_env)
    envs = {name: ({} if name == "baseline" else ours_env) for name in commands}
    for name, cmd in commands.items():
        if ("baseline" if name == "baseline" else "ours") in skip:
            continue
        t0 = time.monotonic()
        env_text = " ".join(f"{k}={v}" for k, v in envs[name].items())
        log(f"[{name} server, {device}] {env_text + ' ' if env_text else ''}{shlex.join(cmd[1:])}")
        with ServerProcess(cmd, name, env=envs[name]) as server:
            warm_up(server, args.hop_s, n_streams=2 if quick else 8, duration_s=2.0 if quick else 5.0)
            server.wait_idle()
            single_run = single_stream(server, duration_s=ramp_s + single_s, hop_s=args.hop_s,
                                       frame_ms=args.frame_ms, max_p99_ms=args.max_p99_ms, ramp_s=ramp_s)
            single = single_run.summary(args.max_p99_ms)
            out["single_stream"][name] = single
            log(f"  {name}: single stream: latency_ms p50 {single['server_p50_ms']:.1f} / p99 "
                f"{single['server_p99_ms']:.1f} ms (client-measured {single['client_p50_ms']:.1f} / "
                f"{single['client_p99_ms']:.1f} ms), {single['received_estimates']}/{single['expected_estimates']} "
                f"estimates")
            out["capacity"][name] = run_capacity(
                server, hop_s=args.hop_s, trial_s=trial_s, max_p99_ms=args.max_p99_ms, frame_ms=args.frame_ms,
                ramp_s=ramp_s,
                client_procs=args.client_procs, search=search, known={1: single_run}, log=log,
            )
            out["capacity"][name]["server_command"] = (env_text + " " if env_text else "") + shlex.join(cmd[1:])
            cores = out["capacity"][name]["server_cpu_cores_at_capacity"]
            out["capacity"][name]["streams_per_server_core"] = (
                out["capacity"][name]["capacity_streams"] / cores if cores else None)
            log(f"  {name}: capacity {out['capacity'][name]['capacity_streams']} streams "
                f"({time.monotonic() - t0:.0f} s)")
    return out


def server_key(vad: str) -> str:
    """The result key of our server with this VAD mode: "ours" (VAD off, compared with the baseline), "ours_vad_energy", ..."""
    return "ours" if vad == "none" else f"ours_vad_{vad}"


def _ingest(args: argparse.Namespace, model_path: Path) -> dict[str, Any]:
    """The ingest stage: the pieces of one message in this process, then our server (VAD off) at 20- and 100-ms frames."""
    from emostream.benchmarks.e2e import ours_command, warm_up
    from emostream.benchmarks.ingest_bench import message_pieces, server_cost
    from emostream.benchmarks.serverproc import ServerProcess

    out: dict[str, Any] = message_pieces(model_path, quick=args.quick)
    for name, p in out["per_message"].items():
        log(f"  ingest: {name}: {p['p50_us']:.2f} us CPU per 20-ms message")
    for name, p in out["per_window"].items():
        log(f"  ingest: {name}: {p['p50_us']:.1f} us CPU per window")
    n = args.ingest_streams or (8 if args.quick else 100)
    cmd = ours_command(model_path, args.hop_s, vad="none", backend=args.backend, max_streams=n + 64,
                       extra=shlex.split(args.serve_args))
    with ServerProcess(cmd, "ours", env=dict(kv.split("=", 1) for kv in args.serve_env)) as server:
        warm_up(server, args.hop_s, n_streams=2 if args.quick else 8, duration_s=2.0 if args.quick else 5.0)
        out["server"] = server_cost(server, n, duration_s=args.trial_s, hop_s=args.hop_s, ramp_s=args.ramp_s,
                                    max_p99_ms=args.max_p99_ms, log=log)
    out["server"]["server_command"] = shlex.join(cmd[1:])
    if not out["server"]["problems"]:
        log(f"  ingest: server CPU {out['server']['server_cpu_us_per_message']:.1f} us per message, "
            f"{out['server']['server_cpu_ms_per_window']:.2f} ms per window (from the 20- and 100-ms runs)")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from emostream.benchmarks.engine_bench import prepare_model, rescale_to_peak, run_engine
    from emostream.benchmarks.features_bench import run_features
    from emostream.benchmarks.machine import describe_machine, devices_present, matmul_peak_gflops
    from emostream.benchmarks.report import run_header

    t_start = time.monotonic()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = (skip | only) - set(STAGES)
    if unknown:
        raise SystemExit(f"benchmarks: unknown stage(s) in --skip/--only: {', '.join(sorted(unknown))}; "
                         f"the stages are {', '.join(STAGES)}")
    if only:
        skip |= set(STAGES) - only
    args.vad_modes = [v.strip() for v in args.vad.split(",") if v.strip()]
    if not args.vad_modes or set(args.vad_modes) - set(VAD_MODES):
        raise SystemExit(f"benchmarks: --vad takes a comma-separated list of {', '.join(VAD_MODES)}, got {args.vad!r}")
    machine = describe_machine()
    log(f"machine: {machine.one_line()}")
    devices = devices_present(args.device)
    if "cuda" not in devices:
        log("CUDA: torch sees no GPU here; CUDA paths skipped")
    model = prepare_model(args.model)
    log(f"model: {model.name} ({model.arch}, {model.parameters:,} parameters) at {model.path}"
        f"{' [untrained stand-in: models/default is not there yet]' if model.standin else ''}")
    args.single_s = args.single_s or (4.0 if args.quick else 60.0)
    args.trial_s = args.trial_s or (3.0 if args.quick else 20.0)
    args.ramp_s = args.ramp_s if args.ramp_s is not None else (0.0 if args.quick else model.window_s)
    result: dict[str, Any] = {
        **run_header("emostream-benchmark/1", "benchmarks", args.quick, machine, model),
        "skipped": sorted(skip),
        "settings": {"hop_s": args.hop_s, "max_p99_ms": args.max_p99_ms, "frame_ms": args.frame_ms,
                     "single_s": args.single_s, "trial_s": args.trial_s, "ramp_s": args.ramp_s,
                     "vad": args.vad, "backend": args.backend, "serve_args": args.serve_args,
                     "serve_env": list(args.serve_env),
                     "max_streams": args.max_streams,
                     "client_procs": args.client_procs or "auto (1 per 200 streams)"},
        "device": devices[0],
        "devices": {},
    }
    if "features" not in skip:
        log("[features] ...")
        all_threads = torch.get_num_threads()
        feats = run_features(hop_s=args.hop_s, quick=args.quick,
                             thread_counts=(1,) if args.quick or all_threads == 1 else (1, all_threads))
        for row in feats["rows"]:
            log(f"  {row['name']}, batch {row['batch']}, {row['threads']} thread(s): p50 {row['p50_ms']:.2f} ms, "
                f"{row['audio_s_per_s']:.0f} x real time")
        result["features"] = feats["rows"]
    else:
        result["features"] = []
    if "vad" not in skip:
        from emostream.benchmarks.vad_bench import run_vad

        log("[vad] ...")
        result["vad"] = run_vad(hop_s=args.hop_s, quick=args.quick)
        for row in result["vad"]["rows"]:
            log(f"  {row['variant']}, {row['streams']:3d} streams (batch {row['batch']}): "
                f"{row['cpu_ms_per_stream_s']:.3f} ms CPU per stream-second{' (default)' if row['default'] else ''}")
        for row in result["vad"]["agreement"]:
            log(f"  {row['variant']}: {100 * row['agreement_with_reference']:.1f} % of {row['windows']} windows "
                f"decided as by {result['vad']['reference_variant']}")
    if "archs" not in skip:
        from emostream.benchmarks.arch_bench import run_archs

        log("[archs] ...")
        result["archs"] = run_archs(quick=args.quick)
        for row in result["archs"]["rows"]:
            log(f"  {row['name']:26s} {row['params'] / 1e6:6.2f} M params, {row['gflop_per_window']:6.2f} GFLOP "
                f"per window, {row['p50_ms_batch1']:7.1f} ms (batch 1), {row['windows_per_s_batch16']:6.0f} "
                "windows/s per core (batch 16)")
    if "ingest" not in skip:
        log("[ingest] ...")
        result["ingest"] = _ingest(args, model.path)
    for device in devices:
        dev: dict[str, Any] = {}
        all_threads = torch.get_num_threads()
        thread_counts: tuple[int | None, ...] = (
            (None,) if args.quick or all_threads == 1 or device != "cpu" else (None, 1))
        peaks = {t or all_threads: matmul_peak_gflops(device, threads=t) for t in thread_counts}
        peak = peaks[all_threads]
        log(f"[{device}] fp32 matmul peak: " + ", ".join(
            f"{p['peak_gflops']:.1f} GFLOP/s at {t} thread(s)" for t, p in peaks.items()))
        if "engine" not in skip:
            log(f"[engine, {device}] ...")
            eng = run_engine(model.path, device, quick=args.quick, peak_gflops=peak["peak_gflops"],
                             thread_counts=thread_counts,
                             thread_peaks_gflops={t: p["peak_gflops"] for t, p in peaks.items()})
            for t in list(peaks):  # once more after: on a shared machine keep the better of the two
                again = matmul_peak_gflops(device, threads=t)
                if again["peak_gflops"] > peaks[t]["peak_gflops"]:
                    log(f"[{device}] fp32 matmul peak at {t} thread(s) measured again: "
                        f"{again['peak_gflops']:.1f} GFLOP/s")
                    peaks[t] = again
            peak = peaks[all_threads]
            rescale_to_peak(eng, peak["peak_gflops"], {t: p["peak_gflops"] for t, p in peaks.items()})
            for row in eng["rows"]:
                log(f"  {row['backend']:11s} {row['threads']} thr batch {row['batch']:3d}: p50 {row['p50_ms']:8.2f} ms, "
                    f"p99 {row['p99_ms']:8.2f} ms, {row['windows_per_s']:7.0f} windows/s, "
                    f"{100 * row['fraction_of_peak']:5.1f} % of peak")
            for backend, why in eng["skipped"].items():
                log(f"  {backend}: skipped ({why})")
            dev["engine"] = eng
        dev["matmul_peak_by_threads"] = {str(t): p for t, p in peaks.items()}
        dev["matmul_peak"] = peak
        dev.update(_servers(args, model.path, device, skip))
        result["devices"][device] = dev
    _headline(result)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return result


def _headline(result: dict[str, Any]) -> None:
    """The top-level figures, for the first device (the CPU unless --device cuda)."""
    dev = result["devices"][result["device"]]
    eng = dev.get("engine", {})
    single, cap = dev["single_stream"], dev["capacity"]
    ours_1, base_1 = single.get("ours", {}), single.get("baseline", {})
    ours_cap, base_cap = cap.get("ours", {}), cap.get("baseline", {})
    result["single_stream_p50_ms"] = float(ours_1.get("server_p50_ms", float("nan")))
    result["single_stream_p99_ms"] = float(ours_1.get("server_p99_ms", float("nan")))
    result["single_stream_client_p50_ms"] = ours_1.get("client_p50_ms")
    result["single_stream_client_p99_ms"] = ours_1.get("client_p99_ms")
    result["baseline_single_stream_p50_ms"] = base_1.get("server_p50_ms")
    result["baseline_single_stream_p99_ms"] = base_1.get("server_p99_ms")
    result["capacity_streams"] = int(ours_cap.get("capacity_streams", 0))
    result["capacity_bounded"] = ours_cap.get("bounded")
    # None (not 0) when the baseline stage was left out with --skip: 0 would read as "kept up with none"
    result["baseline_capacity_streams"] = int(base_cap["capacity_streams"]) if base_cap else None
    result["capacity_ratio"] = (result["capacity_streams"] / result["baseline_capacity_streams"]
                                if result["baseline_capacity_streams"] else None)
    result["server_cpu_cores_at_capacity"] = ours_cap.get("server_cpu_cores_at_capacity")
    result["client_cpu_cores_at_capacity"] = ours_cap.get("client_cpu_cores_at_capacity")
    result["machine_cpu_cores_at_capacity"] = ours_cap.get("machine_cpu_cores_at_capacity")
    result["baseline_server_cpu_cores_at_capacity"] = base_cap.get("server_cpu_cores_at_capacity")
    result["streams_per_server_core"] = ours_cap.get("streams_per_server_core")
    for vad in ("energy", "silero"):
        c = cap.get(server_key(vad), {})
        result[f"capacity_vad_{vad}_streams"] = c.get("capacity_streams")
        result[f"streams_per_server_core_vad_{vad}"] = c.get("streams_per_server_core")
        result[f"capacity_vad_{vad}_share"] = (c["capacity_streams"] / result["capacity_streams"]
                                               if c and result["capacity_streams"] else None)
    result["model_gflop_per_window"] = float(eng.get("gflop_per_window", float("nan")))
    result["peak_gflops"] = float(dev["matmul_peak"]["peak_gflops"])
    result["engine_best_fraction_of_peak"] = float(eng.get("best_fraction_of_peak", float("nan")))
    result["engine"] = eng.get("rows", [])
    targets = {}
    for key, bound in TARGETS.items():
        value = result.get(key)
        met = None if value is None or value != value else (value <= bound if key.endswith("_ms") else value >= bound)
        targets[key] = {"target": ("<= " if key.endswith("_ms") else ">= ") + f"{bound:g}", "value": value, "met": met}
    result["targets"] = targets


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from emostream.benchmarks.report import check_result, figure, plot_latency, write_json, write_markdown

    result = run(args)
    write_json(result, args.json)
    write_markdown(result, args.md)
    plot_latency(result, args.plot)
    log("")
    log(f"single stream: p50 {result['single_stream_p50_ms']:.1f} ms, p99 {result['single_stream_p99_ms']:.1f} ms; "
        f"capacity {result['capacity_streams']} streams vs baseline "
        f"{figure(result['baseline_capacity_streams'], '{}', 'not run')} "
        f"(ratio {figure(result['capacity_ratio'], '{:.1f}', 'none')})"
        f"; {figure(result['model_gflop_per_window'], '{:.3f}', 'not run')} GFLOP/window, "
        f"peak {result['peak_gflops']:.1f} GFLOP/s, "
        f"engine best {figure(100 * result['engine_best_fraction_of_peak'], '{:.1f}', 'not run')} % of peak")
    log(f"streams per server core at capacity: {figure(result['streams_per_server_core'], '{:.0f}', 'n/a')} (VAD off), "
        + ", ".join(f"{figure(result[f'streams_per_server_core_vad_{v}'], '{:.0f}', 'n/a')} ({v}; capacity "
                    f"{figure(result[f'capacity_vad_{v}_streams'], '{}', 'not run')}, "
                    f"{figure(result[f'capacity_vad_{v}_share'], '{:.0%}', 'n/a')} of VAD off)"
                    for v in ("energy", "silero")))
    if result["skipped"]:
        log(f"stages left out (--skip/--only): {', '.join(result['skipped'])}")
    for key, t in result["targets"].items():
        verdict = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
        log(f"target {key} {t['target']}: {t['value']} -> {verdict}")
    if result["quick"]:
        log("(--quick: a smoke run; the figures are not meaningful)")
    log(f"wrote {args.json}, {args.md}, {args.plot} in {result['elapsed_s']:.0f} s")
    problems = check_result(result)
    if problems:
        log("result is incomplete: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
