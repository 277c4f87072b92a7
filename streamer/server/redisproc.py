"""A private ``redis-server`` on a unix socket in a temporary folder: start it, wait for PING, stop it.

The one launcher of a Redis server in the repository: ``emostream serve --workers N`` starts one
when no ``--broker`` is given (the embedded default), and the tests and benchmarks start theirs
with it too. No TCP port (``--port 0``), no persistence (``--save ''``, ``--appendonly no``), the
socket readable by this user only (``--unixsocketperm 700``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REDIS_SERVER = "redis-server"
INSTALL_HINT = (
    "redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server; "
    "macOS: brew install redis) or pass --broker redis://HOST:PORT/DB"
)


def _parent_death_signal() -> None:
    """In the child before exec (Linux): SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def redis_server_path() -> str | None:
    """Where ``redis-server`` is on PATH (None: not installed)."""
    return shutil.which(REDIS_SERVER)


def ping_unix(path: Path, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING on the unix socket ``path`` (plain RESP, no client library)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on ``DIR/redis.sock`` (DIR a fresh temporary folder unless given).

    ``url`` is the ``unix://`` broker URL for ``--broker``. ``stop`` (SIGTERM, then kill) leaves the
    folder in place when it was given, so ``start`` again gives a restarted server on the same
    socket (the fault tests restart Redis mid-stream this way).
    """

    def __init__(
        self, folder: Path | None = None, start_timeout_s: float = 10.0, die_with_parent: bool = False
    ) -> None:
        self._own_folder = folder is None
        self.die_with_parent = die_with_parent  # Linux: SIGTERM it when the thread that started it ends
        self.folder = Path(tempfile.mkdtemp(prefix="emostream-redis-")) if folder is None else Path(folder)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.folder / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def command(self) -> list[str]:
        exe = redis_server_path()
        if exe is None:
            raise RedisServerError(INSTALL_HINT)
        return [
            exe, "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip

    def start(self) -> RedisServer:
        if self.alive():
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal goes to emostream, which stops it in order
            preexec_fn=_parent_death_signal if self.die_with_parent else None,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisServerError(f"redis-server exited with code {self.proc.returncode}: {err.strip()}")
            if ping_unix(self.socket_path):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(
            f"redis-server did not answer PING on {self.socket_path} in {self.start_timeout_s:g} s"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (kill after ``timeout_s``); the folder is removed when this object made it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout_s)
            if proc.stderr is not None:
                proc.stderr.close()
        self.socket_path.unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
