"""A throw-away PulseAudio virtual microphone for tests that need a real PortAudio input device.

How it is wired (all of it inside one temporary directory, nothing in /etc or the real HOME):

    pacat --device=vmic  ->  null sink "vmic" (16 kHz mono)  ->  its monitor "vmic.monitor"
      ->  module-remap-source "virtmic" (the default source)  ->  ALSA pcm "emostream_virtmic"
      (libasound2-plugins' `type pulse` plugin, declared in $TMP/home/.asoundrc)
      ->  PortAudio's ALSA host API  ->  sounddevice / streamer.mic.MicSource

- The daemon runs as the current user (root works: no `--system`) in the foreground:
  `pulseaudio -n -F $TMP/default.pa --daemonize=no --system=no --exit-idle-time=-1 --use-pid-file=no
  --disable-shm=yes --realtime=no --high-priority=no`, with HOME, XDG_RUNTIME_DIR,
  XDG_CONFIG_HOME, PULSE_RUNTIME_PATH and PULSE_STATE_PATH all pointing into $TMP, and no D-Bus.
  `-n` skips the system default.pa; $TMP/default.pa loads only module-native-protocol-unix
  (anonymous auth, socket $TMP/runtime/native), module-null-sink and module-remap-source, and
  sets the default sink and source.
- A silent player (`pacat /dev/zero` into "vmic", 20 ms latency) runs for the whole context and
  start-up waits until `parec` reads audio from "virtmic": an idle null sink renders on a ~2 s
  timer, so without this a recorder's first block would come up to 2 s late.
- Clients use `env` (HOME=$TMP/home for ALSA's ~/.asoundrc, PULSE_SERVER=unix:$TMP/runtime/native).
  The .asoundrc routes ALSA `default` to PulseAudio and adds `emostream_virtmic` (the virtual mic,
  with a `hint` so that PortAudio lists it); it names the server socket itself, so ALSA reaches
  this daemon whatever PULSE_SERVER says. PortAudio reads the ALSA configuration when it is
  initialised: a process that imported sounddevice before setting `env` must re-initialise it
  (`streamer.mic.refresh_devices()`).
- Clean-up: leaving the context manager terminates (then kills) the daemon and any pacat still
  running and deletes $TMP. Every child is also started with PR_SET_PDEATHSIG=SIGKILL, so it dies
  with the test process even if that is killed, and a timer kills the daemon after
  `max_lifetime_s` whatever happens; every subprocess call has a timeout.

Needs the Debian packages pulseaudio, pulseaudio-utils (pacat, pactl), libasound2-plugins and
libportaudio2 (.ci/apt-packages.txt).
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

SINK_NAME = "vmic"
SOURCE_NAME = "virtmic"
ALSA_DEVICE_NAME = "emostream_virtmic"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
PLAY_MARGIN_S = 10.0


class PulseUnavailable(RuntimeError):
    """The PulseAudio daemon or its tools are missing, or the daemon did not come up."""


def missing_binaries() -> list[str]:
    """Names of the programs virtual_microphone() needs that are not on PATH."""
    return [name for name in ("pulseaudio", "pacat", "pactl") if shutil.which(name) is None]


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the child when the process that started it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, then kill if needed; never raises, never waits forever."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    except OSError:
        pass


class VirtualMicrophone:
    """Handle on a running daemon: play audio into the sink, read it back as ALSA `device_name`."""

    def __init__(self, root: Path, sample_rate_hz: int) -> None:
        self.root = root
        self.sample_rate_hz = sample_rate_hz
        self.home = root / "home"
        self.runtime_dir = root / "runtime"
        self.socket_path = self.runtime_dir / "native"
        self.server = f"unix:{self.socket_path}"
        self.log_path = root / "pulseaudio.log"
        self.sink_name = SINK_NAME
        self.source_name = SOURCE_NAME
        self.device_name = ALSA_DEVICE_NAME
        self.env = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "PULSE_SERVER": self.server,
            "PULSE_RUNTIME_PATH": str(self.runtime_dir),
            "PULSE_STATE_PATH": str(root / "state"),
        }
        self._children: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    # ---- playing ---------------------------------------------------------------------------

    def play(self, wav_path: str | os.PathLike[str], timeout_s: float | None = None) -> None:
        """Play a sound file into the sink and wait until pacat has drained it."""
        info = sf.info(str(wav_path))
        limit_s = timeout_s if timeout_s is not None else info.duration + PLAY_MARGIN_S
        self._pacat(["--file-format", str(wav_path)], None, limit_s)

    def play_array(self, audio: np.ndarray, sample_rate_hz: int, timeout_s: float | None = None) -> None:
        """Play float audio `(S,)` or `(S, channels)` into the sink and wait until it has drained."""
        audio = np.asarray(audio, dtype=np.float32)
        channels = 1 if audio.ndim == 1 else audio.shape[1]
        limit_s = timeout_s if timeout_s is not None else audio.shape[0] / sample_rate_hz + PLAY_MARGIN_S
        args = ["--raw", "--format=float32le", f"--rate={sample_rate_hz}", f"--channels={channels}"]
        self._pacat(args, np.ascontiguousarray(audio).astype("<f4").tobytes(), limit_s)

    def _pacat(self, args: list[str], stdin_bytes: bytes | None, timeout_s: float) -> None:
        cmd = ["pacat", "--playback", f"--server={self.server}", f"--device={self.sink_name}", *args]
        proc = self._spawn(cmd, stdin=subprocess.PIPE if stdin_bytes is not None else subprocess.DEVNULL)
        assert proc.stderr is not None
        try:
            _, err = proc.communicate(stdin_bytes, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            raise PulseUnavailable(f"pacat did not finish within {timeout_s:.1f} s: {cmd}") from exc
        finally:
            self._forget(proc)
        if proc.returncode != 0:
            raise PulseUnavailable(f"pacat failed ({proc.returncode}): {err.decode(errors='replace')}")

    # ---- processes -------------------------------------------------------------------------

    def _spawn(
        self,
        cmd: list[str],
        stdin: int = subprocess.DEVNULL,
        stdout: int = subprocess.DEVNULL,
        stderr: int = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """Start a child with the daemon's environment; it is tracked and killed by stop_all()."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "DBUS_"))}
        env.pop("DISPLAY", None)
        env.update(self.env)
        proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        with self._lock:
            self._children.append(proc)
        return proc

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if proc in self._children:
                self._children.remove(proc)

    def pactl(self, *args: str, timeout_s: float = 5.0) -> str:
        """Run `pactl --server=... ARGS` and return its stdout (raises on failure or timeout)."""
        env = dict(os.environ, **self.env)
        done = subprocess.run(
            ["pactl", f"--server={self.server}", *args],
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=True,
        )
        return done.stdout.decode(errors="replace")

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop_all(self) -> None:
        """Kill every child (pacat players first, then the daemon); safe to call twice."""
        with self._lock:
            children, self._children = list(self._children), []
        for proc in reversed(children):
            _kill(proc)


def _write_config(vmic: VirtualMicrophone) -> Path:
    for folder in (vmic.home / ".config", vmic.runtime_dir, vmic.root / "state"):
        folder.mkdir(parents=True, exist_ok=True)
    vmic.runtime_dir.chmod(0o700)
    script = vmic.root / "default.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={vmic.socket_path}\n"
        f"load-module module-null-sink sink_name={SINK_NAME} rate={vmic.sample_rate_hz} channels=1 "
        "sink_properties=device.description=emostream-test-sink\n"
        f"load-module module-remap-source master={SINK_NAME}.monitor source_name={SOURCE_NAME} "
        "source_properties=device.description=emostream-virtual-mic\n"
        f"set-default-sink {SINK_NAME}\n"
        f"set-default-source {SOURCE_NAME}\n"
    )
    (vmic.home / ".asoundrc").write_text(
        "# written by tests/pulse.py: ALSA -> the test's PulseAudio daemon\n"
        f'pcm.!default {{ type pulse server "{vmic.server}" '
        'hint { show on description "PulseAudio (emostream test daemon)" } }\n'
        f'ctl.!default {{ type pulse server "{vmic.server}" }}\n'
        f'pcm.{ALSA_DEVICE_NAME} {{ type pulse server "{vmic.server}" device "{SOURCE_NAME}" '
        'hint { show on description "emostream virtual microphone" } }\n'
    )
    return script


def _warm_up(vmic: VirtualMicrophone, deadline: float) -> None:
    """Keep the sink rendering and wait until the virtual mic delivers its first bytes.

    An idle null sink renders on a ~2 s timer, so a recorder that connects to an idle sink waits up
    to 2 s for its first block (a real microphone starts at once). A silent player that never stops
    (`pacat /dev/zero`, 20 ms latency) keeps the sink on a short period; one `parec` read then waits
    out the tick that was armed at start-up, so tests see a microphone that answers within ~50 ms.
    """
    raw = ["--raw", "--format=s16le", f"--rate={vmic.sample_rate_hz}", "--channels=1", "--latency-msec=20"]
    vmic._spawn(
        ["pacat", "--playback", f"--server={vmic.server}", f"--device={SINK_NAME}", *raw, "/dev/zero"],
        stderr=subprocess.DEVNULL,
    )
    probe = vmic._spawn(
        ["parec", f"--server={vmic.server}", f"--device={SOURCE_NAME}", *raw],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert probe.stdout is not None
        ready, _, _ = select.select([probe.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready or not os.read(probe.stdout.fileno(), 640):
            raise PulseUnavailable(f"the virtual microphone gave no audio at start-up:\n{vmic.log_tail()}")
    finally:
        _kill(probe)
        vmic._forget(probe)


def _wait_ready(vmic: VirtualMicrophone, daemon: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise PulseUnavailable(
                f"pulseaudio exited with {daemon.returncode} at start-up:\n{vmic.log_tail()}"
            )
        if vmic.socket_path.exists():
            try:
                if SOURCE_NAME in vmic.pactl("list", "short", "sources", timeout_s=2.0):
                    _warm_up(vmic, deadline)
                    return
                last_error = f"source {SOURCE_NAME!r} not listed yet"
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                last_error = str(exc)
        time.sleep(0.1)
    raise PulseUnavailable(f"pulseaudio not ready after {timeout_s:.0f} s ({last_error}):\n{vmic.log_tail()}")


@contextmanager
def virtual_microphone(
    sample_rate_hz: int = 16000, max_lifetime_s: float = 600.0
) -> Iterator[VirtualMicrophone]:
    """Start a private PulseAudio daemon with a virtual microphone; stop it and clean up on exit."""
    missing = missing_binaries()
    if missing:
        raise PulseUnavailable(
            f"not on PATH: {', '.join(missing)} (apt-get install pulseaudio pulseaudio-utils)"
        )
    root = Path(tempfile.mkdtemp(prefix="emostream-pulse-"))
    vmic = VirtualMicrophone(root, sample_rate_hz)
    watchdog: threading.Timer | None = None
    try:
        script = _write_config(vmic)
        daemon = vmic._spawn(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(script),
                "--daemonize=no",
                "--system=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "--realtime=no",
                "--high-priority=no",
                f"--log-target=file:{vmic.log_path}",
                "--log-level=notice",
            ],
            stderr=subprocess.DEVNULL,  # it logs to log_path; an unread pipe could block it
        )
        watchdog = threading.Timer(max_lifetime_s, vmic.stop_all)
        watchdog.daemon = True
        watchdog.start()
        _wait_ready(vmic, daemon, STARTUP_TIMEOUT_S)
        yield vmic
    finally:
        if watchdog is not None:
            watchdog.cancel()
        vmic.stop_all()
        shutil.rmtree(root, ignore_errors=True)
