"""A server subprocess for benchmarks and tests: start it, wait for its "listening on" line, measure it, stop it.

The one launcher that ``python -m benchmarks`` (``emostream serve`` and the baseline server),
``python -m benchmarks.soak`` and the tests (``tests/wsutil.py``) use. ``serve_command`` is
``emostream serve`` on a free loopback port; the port comes from the line the server prints once it
listens (``streamer.server.app.LISTENING_PATTERN``). ``ws_frame`` is the one client-frame encoder of
the load generators and the fault tests. ``CpuSampler`` samples the server's and the machine's CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emostream.streamer.server.app import LISTENING_PATTERN

REPO = Path(__file__).resolve().parents[1]


def serve_command(*args: str) -> list[str]:
    """``emostream serve`` on 127.0.0.1 and a free port (``--port 0``), plus ``args``."""
    return [sys.executable, "-m", "emostream.models.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args]


class ServerProcess:
    """A server subprocess that prints ``... listening on ws://HOST:PORT`` once it listens.

    ``lines`` holds everything it printed (stdout and stderr), ``port``/``url`` where it listens.
    ``stop``/``terminate`` send SIGTERM (``emostream serve`` closes every connection with 1001 and
    exits 0) and kill it after ``stop_timeout_s``.
    """

    def __init__(
        self,
        command: Sequence[str],
        name: str = "server",
        env: dict[str, str] | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self._kids: list[Any] = []  # psutil.Process of the child processes, for cpu_s
        self._kids_at = -float("inf")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self) -> ServerProcess:
        self._listening = threading.Event()
        self.lines = []
        self.port = 0
        self._kids, self._kids_at = [], -float("inf")
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            cwd=REPO,
        )
        threading.Thread(target=self._read, name=f"{self.name}-output", daemon=True).start()
        if not self._listening.wait(self.start_timeout_s) or self.proc.poll() is not None or not self.port:
            tail = "".join(self.lines[-40:])
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({' '.join(self.command)}):\n{tail}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = LISTENING_PATTERN.search(line)
            if m and not self._listening.is_set():
                self.port = int(m.group(2))
                self._listening.set()
        self._listening.set()  # exited: wake start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait for the exit code (killed after ``stop_timeout_s``); None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def stop(self) -> int | None:
        """SIGTERM, then kill if it does not exit in time; the exit code."""
        try:
            return self.terminate()
        except subprocess.TimeoutExpired:
            return self.proc.returncode if self.proc is not None else None

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far: all its threads, and its child processes
        (``--workers N``: the workers and the private redis-server; the list is refreshed every 2 s)."""
        import psutil

        assert self.proc is not None
        parent = psutil.Process(self.proc.pid)
        now = time.monotonic()
        if now - self._kids_at > 2.0:
            self._kids, self._kids_at = parent.children(recursive=True), now
        t = parent.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system  # children_*: exited ones
        for kid in self._kids:
            try:
                k = kid.cpu_times()
            except psutil.Error:  # exited since the list was made
                continue
            total += k.user + k.system
        return float(total)

    def wait_idle(self, below_cores: float = 0.1, timeout_s: float = 30.0) -> float:
        """Wait until the server's CPU use over 0.5 s falls below ``below_cores``; returns the wait."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s and self.alive():
            c0 = self.cpu_s()
            time.sleep(0.5)
            if (self.cpu_s() - c0) / 0.5 < below_cores:
                break
        return time.monotonic() - t0

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CpuSampler:
    """Samples the server's CPU seconds and the whole machine's busy CPU seconds every ``period_s``."""

    def __init__(self, server: ServerProcess, period_s: float = 0.1) -> None:
        self.server = server
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), server cpu s, machine busy s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @staticmethod
    def _machine_busy_s() -> float:
        import psutil

        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self.server.cpu_s(), self._machine_busy_s()))
            except Exception:  # the server exited: keep the samples so far
                return
            self._stop.wait(self.period_s)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def rates(self, t_a: float, t_b: float) -> tuple[float, float]:
        """(server cores, machine cores) used on average between the samples nearest ``t_a`` and ``t_b``."""
        inside = [x for x in self.samples if t_a <= x[0] <= t_b]
        if len(inside) < 2:
            inside = self.samples[:1] + self.samples[-1:] if len(self.samples) >= 2 else []
        if len(inside) < 2:
            return 0.0, 0.0
        (ta, sa, ma), (tb, sb, mb) = inside[0], inside[-1]
        dt = max(tb - ta, 1e-9)
        return (sb - sa) / dt, (mb - ma) / dt



def ws_frame(
    payload: bytes,
    opcode: int = 0x2,
    fin: bool = True,
    mask: bytes = b"\x00\x00\x00\x00",
    declared_len: int | None = None,
) -> bytes:
    """One client-to-server WebSocket frame (RFC 6455 5.2): binary by default (``opcode`` 0x1: text).

    Clients must mask their frames (5.3); the default all-zero masking key is a valid key that
    leaves the payload as is, so a load generator can build a frame once and write it straight to
    the transport (one ``transport.write`` per message instead of websockets' framing). Fault tests
    pass a random ``mask``, a non-final frame (``fin=False``) or a ``declared_len`` larger than the
    payload they send.
    """
    n = len(payload) if declared_len is None else declared_len
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    if mask == b"\x00\x00\x00\x00":
        return head + mask + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked
