"""The streamer's commands: help texts, clear errors and exit codes (no tracebacks), no-microphone behaviour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emostream.models.cli import main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse --help, and CliExit after a printed error
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emostream.streamer", *argv], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize(
    "command, expected",
    [
        (
            "live",
            [
                "microphone",
                "--list-devices",
                "--device",
                "--json",
                "--ws-port",
                "--compute-device",
                "emostream demo",
            ],
        ),
        ("demo", ["bundled", "real time", "--speed", "--json", "FILE"]),
        ("replay", ["as fast as", "--jsonl", "--realtime", "offline", "FILE"]),
        ("serve", ["WebSocket"]),
    ],
)
def test_help_texts(command: str, expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    for word in [*expected, "--model", "--hop-s", "--backend", "--no-vad", "--threads"]:
        assert word in out, f"{word!r} missing from `emostream {command} --help`"


def test_bad_files_exit_1_with_a_clear_message(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio\n")
    for argv, message in [
        (["replay", str(not_audio)], "not a readable sound file"),
        (["replay", str(tmp_path / "missing.flac")], "no such file"),
        (["demo", str(tmp_path)], "is a directory"),
        (["replay", str(not_audio), "--jsonl", str(tmp_path / "out.jsonl")], "not a readable sound file"),
    ]:
        code, _, err = run_main([*argv, "--model", str(tiny_model_dir)], capsys)
        assert code == 1 and message in err, (argv, err)
    wav = tmp_path / "ok.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    code, _, err = run_main(["replay", str(wav), "--model", str(not_audio)], capsys)
    assert code == 1 and "cannot load the model" in err
    code, _, err = run_main(["replay", str(wav), "--model", str(tiny_model_dir), "--hop-s", "0.013"], capsys)
    assert code == 1 and "feature hop" in err


def test_missing_default_model_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import soundfile as sf

    from emostream.models import modelfile

    monkeypatch.setitem(modelfile.SHIPPED_MODELS, "default", tmp_path / "no-default-model")  # as in a fresh clone
    monkeypatch.setitem(modelfile.SHIPPED_MODELS, "fast", tmp_path / "no-fast-model")

    wav = tmp_path / "ok.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    code, _, err = run_main(["replay", str(wav)], capsys)
    assert code == 1 and "no default model" in err and "emostream export" in err and "--model" in err
    code, _, err = run_main(["replay", "--model", "fast", str(wav)], capsys)
    assert code == 1 and "no fast model" in err and "no-fast-model" in err


def test_replay_of_a_bad_file_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC but not really")
    proc = run_cli(["replay", str(bad)])
    assert proc.returncode == 1
    assert "not a readable sound file" in proc.stderr and "Traceback" not in proc.stderr


def no_sound_env(tmp_path: Path) -> dict[str, str]:
    """An environment where PortAudio finds no input: no PulseAudio server reachable, no ~/.asoundrc."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "DBUS_", "ALSA_"))}
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
        XDG_CONFIG_HOME=str(home / ".config"),
        PULSE_SERVER="unix:/nonexistent/emostream-test/native",
        PULSE_RUNTIME_PATH=str(runtime / "pulse"),
    )
    return env


def test_live_without_an_input_device_exits_2(tmp_path: Path) -> None:
    env = no_sound_env(tmp_path)
    listing = run_cli(["live", "--list-devices"], env=env)
    if listing.returncode == 0:
        pytest.skip(f"this machine has a sound card, PortAudio lists inputs:\n{listing.stdout}")
    assert listing.returncode == 2 and "Traceback" not in listing.stderr
    proc = run_cli(["live", "--model", "does-not-matter"], env=env)  # the device is checked first
    assert proc.returncode == 2, proc.stderr
    assert "No audio input device found" in proc.stderr
    assert "--list-devices" in proc.stderr and "emostream demo" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.pulseaudio
def test_live_streams_from_a_microphone_and_says_so_when_it_vanishes(tiny_model_dir: Path) -> None:
    """A private PulseAudio virtual microphone (tests/pulse.py): JSON estimates, then the daemon dies."""
    import threading

    import numpy as np
    from pulse import missing_binaries, virtual_microphone

    if missing_binaries():
        pytest.skip(f"PulseAudio tools not installed: {', '.join(missing_binaries())}")
    with virtual_microphone(16000) as vm:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "DBUS_"))}
        env.update(vm.env)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emostream.streamer",
                "live",
                "--json",
                "--device",
                vm.device_name,
                "--model",
                str(tiny_model_dir),
                "--hop-s",
                "0.5",
                "--no-vad",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            t = np.arange(16000 * 4) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
            threading.Thread(target=vm.play_array, args=(tone, 16000), daemon=True).start()
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            assert all('"type":"estimate"' in line and '"stream":"mic"' in line for line in lines), lines
            vm.stop_all()  # the microphone vanishes
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1
    assert "the microphone stopped" in err and "--list-devices" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_replay_stops_on_a_signal_with_whole_flushed_lines(tiny_model_dir: Path, tmp_path: Path, sig: int) -> None:
    """Ctrl-C or kill mid-stream: exit 0, every line written so far is complete JSON, a summary says so."""
    import json

    import soundfile as sf
    from wsutil import synth_audio

    clip, out = tmp_path / "long.wav", tmp_path / "out.jsonl"
    sf.write(clip, synth_audio(60.0, 16000), 16000, subtype="PCM_16")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream.streamer", "replay", str(clip), "--model", str(tiny_model_dir), "--no-vad",
         "--realtime", "--speed", "4", "--jsonl", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a test run started in the background (nohup, `&`) ignores SIGINT, and its
        # children would inherit that (Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
            time.sleep(0.1)
        assert out.exists() and out.read_text().count("\n") >= 2, "no estimates before the signal"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped by a signal" in err
    text = out.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert 2 <= len(lines) < 56  # stopped well before the 56 windows of the whole minute
    assert [m["seq"] for m in lines] == list(range(len(lines)))


@pytest.mark.parametrize("command", [["replay", "x.wav"], ["demo"], ["serve"], ["live"]])
def test_the_runtime_defaults_are_the_ones_the_cli_runs(command: list[str]) -> None:
    from emostream.models.cli import build_parser
    from emostream.streamer.cli.options import runtime_config
    from emostream.streamer.runtime.config import RuntimeConfig

    assert runtime_config(build_parser().parse_args(command)) == RuntimeConfig()
