"""``python -m benchmarks.scale``: capacity of `emostream serve` with --workers 1, --workers 1 --broker and --workers 2, in one run.

Each setting is a real server on loopback (``benchmarks.serverproc``), warmed up, then searched for
its capacity with the same criterion as ``python -m benchmarks`` (``benchmarks.capacity``: the most
real-time streams, 20-ms frames, with p99 latency <= 500 ms, nothing dropped, no estimate missing).
The broker of ``w1_broker`` is a private ``redis-server`` on a unix socket
(``streamer.server.redisproc``); ``--workers 2`` starts its own. The load generator runs on the
same machine: its CPU is reported beside the server's (the server's includes its workers and its
redis-server). Ratios: ``w2 / w1`` (target >= 1.3 on 2 cores) and ``w1_broker / w1`` (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("out") / "benchmarks"
SETTINGS = ("w1", "w1_broker", "w2")
TARGETS = {"workers_ratio": 1.3, "broker_ratio": 0.9}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Capacity (real-time streams at p99 <= --max-p99-ms) of `emostream serve --workers 1`, "
        "`--workers 1 --broker` (a private redis-server) and `--workers N` side by side, with server and "
        "load-generator CPU. Run it on an otherwise idle machine.",
        epilog="--quick (about 3 minutes) only checks that the harness works; its figures mean nothing.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: short trials, capped search")
    p.add_argument("--model", default="default", help="'default' or a model directory / file")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated, from {', '.join(SETTINGS)} (default all); w2 is --workers N "
                   "with N from --workers")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="N of the multi-worker setting (default 2)")
    p.add_argument("--hop-s", type=float, default=1.0, help="seconds between a stream's windows (default 1)")
    p.add_argument("--max-p99-ms", type=float, default=500.0, help="capacity criterion (default 500)")
    p.add_argument("--frame-ms", type=float, default=20.0, help="audio per WebSocket message (default 20)")
    p.add_argument("--trial-s", type=float, default=None, help="capacity trial length (default 20; quick 3)")
    p.add_argument(
        "--ramp-s",
        type=float,
        default=None,
        help="seconds each stream runs before it is timed (default the model's window; quick 0)",
    )
    p.add_argument(
        "--start", type=int, default=16, help="first N of the capacity search (default 16; quick 2)"
    )
    p.add_argument("--max-streams", type=int, default=2048, help="upper end of the capacity search")
    p.add_argument(
        "--client-procs", type=int, default=None, help="load-generator processes (default 1 per 200)"
    )
    p.add_argument(
        "--vad", choices=("none", "energy", "silero"), default="none", help="speech gate (default none)"
    )
    p.add_argument(
        "--serve-args", default="", help="more `emostream serve` options for every setting, one string"
    )
    p.add_argument("--json", type=Path, default=DEFAULT_OUT / "scale.json", help="all figures (JSON)")
    p.add_argument("--md", type=Path, default=DEFAULT_OUT / "scale.md", help="Markdown table for the README")
    return p


def log(msg: str) -> None:
    print(msg, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from emostream.benchmarks.capacity import SearchSettings, run_capacity
    from emostream.benchmarks.e2e import ours_command, warm_up
    from emostream.benchmarks.engine_bench import prepare_model
    from emostream.benchmarks.machine import describe_machine
    from emostream.benchmarks.report import run_header
    from emostream.benchmarks.serverproc import ServerProcess
    from emostream.streamer.server.redisproc import RedisServer

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if unknown := set(settings) - set(SETTINGS):
        raise SystemExit(f"benchmarks.scale: unknown setting(s): {', '.join(sorted(unknown))}")
    machine = describe_machine()
    log(f"machine: {machine.one_line()}")
    model = prepare_model(args.model)
    log(
        f"model: {model.name} ({model.arch}) at {model.path}{' [untrained stand-in]' if model.standin else ''}"
    )
    trial_s = args.trial_s or (3.0 if args.quick else 20.0)
    ramp_s = args.ramp_s if args.ramp_s is not None else (0.0 if args.quick else model.window_s)
    search = SearchSettings(start=2 if args.quick else args.start, growth=2.0 if args.quick else 1.5,
                            max_n=args.max_streams, max_trials=3 if args.quick else 18,
                            confirm_failures=not args.quick)  # fmt: skip
    result: dict[str, Any] = {
        **run_header("emostream-scale/1", "benchmarks.scale", args.quick, machine, model),
        "settings": {"hop_s": args.hop_s, "max_p99_ms": args.max_p99_ms, "frame_ms": args.frame_ms,
                     "trial_s": trial_s, "ramp_s": ramp_s, "vad": args.vad, "workers": args.workers},
        "capacity": {},
    }  # fmt: skip
    redis = RedisServer().start() if "w1_broker" in settings else None
    try:
        for name in settings:
            extra = shlex.split(args.serve_args)
            if name == "w1_broker":
                assert redis is not None
                extra += ["--broker", redis.url]
            elif name == "w2":
                extra += ["--workers", str(args.workers)]
            cmd = ours_command(
                model.path, args.hop_s, vad=args.vad, max_streams=args.max_streams + 64, extra=extra
            )
            t0 = time.monotonic()
            log(f"[{name}] {shlex.join(cmd[1:])}")
            with ServerProcess(cmd, name) as server:
                warm_up(
                    server,
                    args.hop_s,
                    n_streams=2 if args.quick else 8,
                    duration_s=2.0 if args.quick else 5.0,
                )
                server.wait_idle()
                cap = run_capacity(server, hop_s=args.hop_s, trial_s=trial_s, max_p99_ms=args.max_p99_ms,
                                   frame_ms=args.frame_ms, ramp_s=ramp_s, client_procs=args.client_procs,
                                   search=search, log=log)  # fmt: skip
            cap["server_command"] = shlex.join(cmd[1:]).replace(
                redis.url if redis else "\0", "unix://REDIS.sock"
            )
            result["capacity"][name] = cap
            log(f"  {name}: capacity {cap['capacity_streams']} streams, server CPU "
                f"{cap['server_cpu_cores_at_capacity'] or 0:.2f} cores, load generator "
                f"{cap['client_cpu_cores_at_capacity'] or 0:.2f} cores ({time.monotonic() - t0:.0f} s)")  # fmt: skip
    finally:
        if redis is not None:
            redis.close()
    caps = {k: v["capacity_streams"] for k, v in result["capacity"].items()}
    result["workers_ratio"] = caps["w2"] / caps["w1"] if caps.get("w1") and "w2" in caps else None
    result["broker_ratio"] = (
        caps["w1_broker"] / caps["w1"] if caps.get("w1") and "w1_broker" in caps else None
    )
    result["targets"] = {
        k: {"target": f">= {v:g}", "value": result[k], "met": None if result[k] is None else result[k] >= v}
        for k, v in TARGETS.items()
    }
    return result


def markdown(result: dict[str, Any]) -> str:
    """The README table: one row per setting, then the two ratios."""
    s = result["settings"]
    lines = [
        f"Capacity: real-time streams ({s['frame_ms']:g}-ms frames, hop {s['hop_s']:g} s, VAD {s['vad']}) with p99 "
        f"latency <= {s['max_p99_ms']:g} ms, nothing dropped or missing; {s['trial_s']:g}-s trials. "
        f"Machine: {result['machine_line']}. Command: `{result['command']}`"
        + (" (--quick: figures not meaningful)" if result["quick"] else ""),
        "",
        "| setting | server command | capacity (streams) | server CPU (cores) | load generator CPU (cores) | p99 at capacity (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in result["capacity"].items():
        cmd = c["server_command"].split(" serve ", 1)[-1]
        lines.append(
            f"| {name} | `serve {cmd}` | {c['capacity_streams']}{'' if c['bounded'] else '+'} | "
            f"{_fmt(c['server_cpu_cores_at_capacity'])} | {_fmt(c['client_cpu_cores_at_capacity'])} | "
            f"{_fmt(c['p99_ms_at_capacity'], '{:.0f}')} |"
        )
    lines += ["", f"w2 / w1: {_fmt(result['workers_ratio'])} (target >= 1.3); "
              f"w1_broker / w1: {_fmt(result['broker_ratio'])} (target >= 0.9)"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _fmt(x: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if x is None else pattern.format(x)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(markdown(result), encoding="utf-8")
    log("")
    log(markdown(result))
    log(f"wrote {args.json} and {args.md}")
    return 0 if result["capacity"] else 1


if __name__ == "__main__":
    sys.exit(main())
