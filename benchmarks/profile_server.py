"""Where the server's CPU goes under load: py-spy samples of a real ``emostream serve``, summed by part.

    python -m benchmarks.profile_server --streams 300 --seconds 30 --out docs/benchmarks/profile-300.md

Starts ``emostream serve`` (``--vad`` as given; default off), drives ``--streams`` real-time streams
at ``--frame-ms`` from the load generator (``benchmarks.e2e.run_load``), and lets py-spy sample the
server's threads that py-spy does not see idle (``py-spy record --format raw``, 100 Hz; a thread
waiting for the interpreter lock counts as busy) during the steady part of the run. Each sample is put in one part by the innermost frame that names one (``PARTS``, first
match wins): websockets' parsing and sending, our ingest (protocol, rate limit), ``push``
(float conversion, ring, windower), the event loop, and on the worker thread the VAD, features,
model, smoothing, JSON and publication. Writes a Markdown table (share of samples; that share of
the server's CPU as psutil measured it over the run, in cores and in microseconds per message or
per window) with the command and the machine, plus the raw stacks.
Needs py-spy (``pip install py-spy``) and permission to read the server's memory (ptrace).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from emostream.benchmarks.e2e import ours_command, run_load, warm_up
from emostream.benchmarks.engine_bench import prepare_model
from emostream.benchmarks.machine import describe_machine
from emostream.benchmarks.serverproc import ServerProcess

RATE_HZ = 100
# (part, per what, substrings of a frame "function (file:line)"); the innermost frame matching any wins
PARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("model (ONNX Runtime / torch inference)", "window", ("classify.py", "classifier.py", "onnxruntime")),
    ("VAD", "window", ("core/vad.py", "runtime/silero.py")),
    ("features (incremental log-mel)", "window", ("core/frames.py", "models/features.py", "torch/functional.py")),
    ("smoothing", "window", ("core/smoother.py",)),
    ("estimate JSON", "window", ("core/events.py", "json/encoder.py", "json/__init__.py")),
    ("publication (hub, callbacks)", "window", ("server/hub.py", "runtime/batch.py")),
    ("batching and worker loop", "window", ("core/batcher.py", "runtime/worker.py")),
    ("push: to float, ring, windower", "message",
     ("runtime/stream.py", "core/ring.py", "core/resample.py", "core/windower.py", "runtime/runtime.py")),
    ("ingest: protocol, rate limit, session", "message",
     ("server/protocol.py", "server/limits.py", "server/ingest.py")),
    ("websockets: frame parsing and sending", "message", ("websockets/",)),
    ("event loop, transport, other", "message", ("",)),
)


def part_of(stack: str) -> str:
    """The part a semicolon-separated stack (outermost first) belongs to."""
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, _, needles in PARTS[:-1]:
            if any(n in frame for n in needles):
                return name
    return PARTS[-1][0]


def summarise(raw: str) -> Counter[str]:
    """Samples per part from py-spy's raw output (``stack count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[part_of(stack)] += int(n)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=300, help="real-time streams (default 300)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the load run (default 30)")
    p.add_argument("--frame-ms", type=float, default=20.0, help="audio per message (default 20)")
    p.add_argument("--vad", choices=("none", "energy", "silero"), default="none", help="server's VAD (default none)")
    p.add_argument("--model", default="default")
    p.add_argument("--out", type=Path, required=True, help="Markdown summary; the raw stacks go beside it (.txt)")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        p.error("py-spy is not installed: pip install py-spy")
    model = prepare_model(args.model)
    cmd = ours_command(model.path, 1.0, vad=args.vad, max_streams=args.streams + 64)
    raw_path = args.out.with_suffix(".txt")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record_s = max(5.0, args.seconds - 10.0)
    with ServerProcess(cmd, "ours") as server:
        assert server.proc is not None
        warm_up(server, 1.0, n_streams=8, duration_s=5.0)
        server.wait_idle()
        spy_cmd = [spy, "record", "--pid", str(server.proc.pid), "--duration", f"{record_s:g}", "--rate",
                   str(RATE_HZ), "--format", "raw", "--nonblocking", "-o", str(raw_path)]

        def record() -> None:
            time.sleep(5.0 + 0.01 * args.streams)  # the load generator connects and streams settle
            subprocess.run(spy_cmd, capture_output=True, check=False)

        recorder = threading.Thread(target=record)
        recorder.start()
        res = run_load(server, args.streams, duration_s=args.seconds, frame_ms=args.frame_ms, prefix="prof")
        recorder.join()
    if not raw_path.exists():
        print("py-spy wrote nothing (no permission to trace the server? try as root or with ptrace allowed)")
        return 1
    counts = summarise(raw_path.read_text())
    total = sum(counts.values())
    busy = total / RATE_HZ / record_s  # thread-seconds per second that py-spy saw busy
    per_s = {"message": args.streams * 1000.0 / args.frame_ms, "window": float(args.streams)}
    machine = describe_machine()
    command = "python -m benchmarks.profile_server " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# Where the server's CPU goes: {args.streams} streams, {args.frame_ms:g}-ms frames, VAD {args.vad}",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Server: `{shlex.join(cmd[1:])}`.",
        f"Machine: {machine.one_line()}.",
        f"Load run: p99 {res.p99_ms():.0f} ms, server {res.server_cpu_cores:.2f} cores (psutil), load generator "
        f"{res.client_cpu_cores:.2f} cores; problems: {res.problems(1e9) or 'none'}.",
        f"py-spy: {total} samples of busy server threads at {RATE_HZ} Hz over {record_s:g} s ({busy:.2f} busy "
        f"threads on average); raw stacks: `{raw_path.name}`. Cores per part: its share of the samples times "
        f"the server's {res.server_cpu_cores:.2f} cores.",
        "",
        "| part | share of samples | cores | us per message or window |",
        "|---|---:|---:|---:|",
    ]
    for name, per, _ in PARTS:
        n = counts.get(name, 0)
        c = n / max(total, 1) * res.server_cpu_cores
        lines.append(f"| {name} | {100 * n / max(total, 1):.1f} % | {c:.3f} | {c * 1e6 / per_s[per]:.1f} per {per} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
