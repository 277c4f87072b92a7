"""`emostream serve --workers N` and `--broker URL`: the options, and the parent that runs N server processes.

One port for all workers by ``SO_REUSEPORT``: the parent binds the port first (so ``--port 0``
resolves once and a busy port fails before any model loads) and keeps that socket, bound but not
listening, for its lifetime; each worker (``multiprocessing`` spawn: a fresh interpreter with its
own event loop, runtime and model) listens on the same port with ``reuse_port``, and the kernel
spreads new connections over the listening workers. A stream lives in the worker that accepted it.

The workers share one feed and one stream-id registry through Redis (``streamer.server.broker``):
``--broker URL``, or else a private ``redis-server`` the parent starts on a unix socket in a
temporary folder (``streamer.server.redisproc``) and stops at exit. The parent prints the
"listening on" line once every worker listens, forwards SIGTERM/SIGINT to them (each closes its
connections with 1001), and replaces a worker that dies (the dead worker's clients see their
connection drop and may reconnect; its stream ids are free again after the claim's time to live).

Exit codes: 0 stopped by a signal, 1 cannot listen, 2 bad options, 3 broker unreachable or
redis-server missing, else the code a worker failed with at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from emostream.streamer.server.app import LISTENING_LINE
from emostream.streamer.server.brokerconf import redact_url
from emostream.streamer.server.ops import WorkerInfo

log = logging.getLogger("emostream.server")

EXIT_LISTEN, EXIT_USAGE, EXIT_BROKER = 1, 2, 3
BROKER_ENV = "EMOSTREAM_BROKER"
QUICK_DEATH_S = 10.0  # a worker that dies sooner after its start is restarted with growing delays


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--workers and --broker (docs/deploy.md)."""
    g = p.add_argument_group("scale out (docs/deploy.md)")
    g.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="server processes sharing the port (SO_REUSEPORT), each with its own event loop and model; "
        "'auto': one per CPU core. Default 1: one process, as without this option. With N > 1 the workers "
        "share one feed and one set of stream ids through Redis: --broker, or a private redis-server "
        "started on a unix socket (needs redis-server installed)",
    )
    g.add_argument(
        "--broker",
        default=os.environ.get(BROKER_ENV) or None,
        metavar="URL",
        help="Redis for the cluster-wide /feed and stream ids: redis://HOST:PORT/DB, rediss://... (TLS) or "
        f"unix:///path/redis.sock. Every server on every machine given the same URL is one cluster "
        f"(default: ${BROKER_ENV}, else none)",
    )


def resolve_workers(value: str) -> int:
    """``auto`` -> the CPU cores this process may use; else a whole number >= 1 (ValueError otherwise)."""
    if str(value).strip().lower() == "auto":
        return max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--workers must be a whole number or 'auto', got {value!r}") from None
    if n < 1:
        raise ValueError(f"--workers must be at least 1, got {n}")
    return n


@dataclass
class WorkerChild:
    """What a worker process knows of its parent: which worker it is, and the pipe to say it listens."""

    info: WorkerInfo
    conn: Connection

    def announce(self, port: int) -> None:
        self.conn.send(("listening", os.getpid(), port))


def _worker_main(args: argparse.Namespace, info: WorkerInfo, conn: Connection) -> None:
    """A worker process (spawned): ``emostream serve`` as one process, on the shared port."""
    from emostream.streamer.cli.serve import run_serve

    _die_with_parent()
    args.worker = WorkerChild(info, conn)
    sys.exit(run_serve(args))


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the parent dies, even by SIGKILL (no orphaned workers on the port)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not listening: holds the port for the workers.

    A fixed port is first bound without SO_REUSEPORT, so that a port in use by anything (another
    ``--workers`` server too, which would otherwise share it silently) fails here.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
            )  # TIME_WAIT is fine, a listener is not
            probe.bind(addr)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    """The parent of ``--workers N``: port, broker, N worker processes, restarts, shutdown."""

    def __init__(self, args: argparse.Namespace, n_workers: int, stop_timeout_s: float = 30.0) -> None:
        self.args = args
        self.n = n_workers
        self.stop_timeout_s = stop_timeout_s
        self.ctx = multiprocessing.get_context("spawn")
        self.reset()

    def reset(self) -> None:
        self.procs: dict[int, Any] = {}  # index -> multiprocessing process
        self.conns: dict[int, Connection] = {}
        self.started_at: dict[int, float] = {}
        self.quick_deaths: dict[int, int] = {}
        self.listening: set[int] = set()
        self.restarts = 0
        self.stop = threading.Event()
        self.redis: Any = None
        self.run_dir: Path | None = None
        self.port = 0

    # ---- start-up ----------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        try:
            holder = reserve_port(args.host, args.port)
        except OSError as exc:
            print(f"emostream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return EXIT_LISTEN
        self.port = int(holder.getsockname()[1])
        self.run_dir = Path(tempfile.mkdtemp(prefix="emostream-serve-"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            code = self._start_broker()
            if code:
                return code
            metrics_dir = self.run_dir / "metrics"
            metrics_dir.mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # before any worker imports prometheus
            for index in range(self.n):
                self._spawn(index)
            failed = self._wait_listening()
            if failed is not None:
                return failed
            print(LISTENING_LINE.format(host=args.host, port=self.port), file=sys.stderr, flush=True)
            log.info(
                "%d workers on port %d (SO_REUSEPORT), broker %s", self.n, self.port, redact_url(args.broker)
            )
            self._watch()
            return 0
        finally:
            self._stop_all()
            holder.close()
            if self.redis is not None:
                self.redis.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            log.info("stopped")

    def _start_broker(self) -> int:
        from emostream.streamer.server.brokerconf import BrokerUnavailableError, ping_broker
        from emostream.streamer.server.redisproc import RedisServer, RedisServerError, redis_server_path

        if self.args.broker:
            try:
                ping_broker(self.args.broker)
            except BrokerUnavailableError as exc:
                print(f"emostream serve: {exc}", file=sys.stderr)
                return EXIT_BROKER
            return 0
        if redis_server_path() is None:
            print(
                f"emostream serve: --workers {self.n} needs a broker: install redis-server (Debian/Ubuntu: "
                "apt-get install redis-server; macOS: brew install redis) for a private one, or pass "
                "--broker redis://HOST:PORT/DB",
                file=sys.stderr,
            )
            return EXIT_BROKER
        assert self.run_dir is not None
        try:
            self.redis = RedisServer(self.run_dir / "redis", die_with_parent=True).start()
        except RedisServerError as exc:
            print(f"emostream serve: cannot start the private redis-server: {exc}", file=sys.stderr)
            return EXIT_BROKER
        self.args.broker = self.redis.url
        log.info("private redis-server (pid %d) on %s", self.redis.proc.pid, self.redis.socket_path)
        return 0

    def _spawn(self, index: int) -> None:
        assert self.run_dir is not None
        info = WorkerInfo(index, self.n, str(self.run_dir / "workers.json"))
        parent_end, child_end = self.ctx.Pipe(duplex=False)
        args = argparse.Namespace(**{**vars(self.args), "port": self.port})
        proc = self.ctx.Process(
            target=_worker_main, args=(args, info, child_end), name=f"emostream-worker-{index}"
        )
        proc.start()
        child_end.close()
        self.procs[index], self.conns[index] = proc, parent_end
        self.started_at[index] = time.monotonic()
        self._write_status()

    def _wait_listening(self) -> int | None:
        """Until every worker listens: None; a worker that exits first: its exit code; a signal: 0."""
        while len(self.listening) < self.n:
            if self.stop.is_set():
                return 0
            self._poll(0.2)
            for index, proc in self.procs.items():
                if not proc.is_alive() and index not in self.listening:
                    code = proc.exitcode
                    log.error("worker %d exited with code %s before it listened", index, code)
                    return code if code and code > 0 else 1
        return None

    # ---- running -----------------------------------------------------------------------------

    def _poll(self, timeout_s: float) -> list[int]:
        """Wait for a message or an exit; read the messages; return the indices of workers that exited."""
        by_obj: dict[Any, tuple[str, int]] = {}
        for index, proc in self.procs.items():
            by_obj[proc.sentinel] = ("exit", index)
            by_obj[self.conns[index]] = ("msg", index)
        exited = []
        for obj in wait(list(by_obj), timeout_s):
            what, index = by_obj[obj]
            if what == "msg":
                try:
                    _, pid, port = self.conns[index].recv()
                except (EOFError, OSError):
                    continue
                self.listening.add(index)
                log.info("worker %d (pid %d) listening on port %d", index, pid, port)
                self._write_status()
            else:
                exited.append(index)
        return exited

    def _watch(self) -> None:
        while not self.stop.is_set():
            for index in self._poll(0.5):
                if self.stop.is_set():
                    break
                if self.procs[index].is_alive():
                    continue
                self._replace(index)
            if self.redis is not None and not self.redis.alive() and not self.stop.is_set():
                log.warning("the private redis-server exited; starting it again")
                try:
                    self.redis.start()
                except Exception as exc:
                    log.error("cannot restart the private redis-server: %s", exc)

    def _replace(self, index: int) -> None:
        from prometheus_client import multiprocess

        proc = self.procs[index]
        code = proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        lived_s = time.monotonic() - self.started_at[index]
        log.warning(
            "worker %d (pid %d) died (%s) after %.1f s; starting another", index, proc.pid, how, lived_s
        )
        multiprocess.mark_process_dead(proc.pid)
        self.conns[index].close()
        self.listening.discard(index)
        self._write_status()
        quick = self.quick_deaths.get(index, 0) + 1 if lived_s < QUICK_DEATH_S else 0
        self.quick_deaths[index] = quick
        if quick:
            self.stop.wait(min(30.0, 0.5 * 2**quick))
            if self.stop.is_set():
                return
        self.restarts += 1
        self._spawn(index)

    def _write_status(self) -> None:
        if self.run_dir is None:
            return
        alive = sum(1 for i, p in self.procs.items() if p.is_alive() and i in self.listening)
        status = {"workers": self.n, "alive": alive, "restarts": self.restarts,
                  "pids": {str(i): p.pid for i, p in self.procs.items()}}  # fmt: skip
        tmp = self.run_dir / "workers.json.tmp"
        tmp.write_text(json.dumps(status), encoding="utf-8")
        os.replace(tmp, self.run_dir / "workers.json")

    # ---- shutdown ----------------------------------------------------------------------------

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each closes its connections with 1001), then wait; kill the late."""
        live = [p for p in self.procs.values() if p.is_alive()]
        if live:
            log.info("stopping %d worker(s)", len(live))
        for p in live:
            if p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for p in live:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %d did not stop in %.0f s; killing it", p.pid, self.stop_timeout_s)
                p.kill()
                p.join(5)
        for conn in self.conns.values():
            conn.close()
