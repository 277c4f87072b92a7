"""streamer.sources.mic against a real PortAudio input: a private PulseAudio virtual microphone (tests/pulse.py)."""

from __future__ import annotations

import builtins
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from pulse import VirtualMicrophone, missing_binaries, virtual_microphone

from emostream.streamer.sources import mic
from emostream.streamer.sources.mic import InputDevice, MicError, MicSource, NoInputDeviceError

SAMPLE_RATE_HZ = 16000
BLOCK_MS = 20
TONE_HZ = 440.0

needs_pulse = pytest.mark.skipif(
    bool(missing_binaries()),
    reason=f"PulseAudio tools not installed ({', '.join(missing_binaries())}): "
    "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 "
    "(.ci/apt-packages.txt)",
)


@contextmanager
def portaudio_sees(vmic: VirtualMicrophone) -> Iterator[VirtualMicrophone]:
    """Point this process's ALSA/PulseAudio clients at `vmic` and rescan PortAudio; undo on exit."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in vmic.env.items():
            patch.setenv(key, value)
        mic.refresh_devices()
        yield vmic
    mic.refresh_devices()  # the environment is restored: rescan so later users see the real devices


@pytest.fixture(scope="module")
def vmic() -> Iterator[VirtualMicrophone]:
    with virtual_microphone(SAMPLE_RATE_HZ) as vm, portaudio_sees(vm):
        yield vm


class Recorder:
    """on_audio / on_status sink that keeps every block (blocks are copies owned by the callee)."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.lost: list[int] = []
        self.statuses: list[mic.MicStatus] = []

    def on_audio(self, block: np.ndarray, n_lost_frames: int) -> None:
        self.blocks.append(block)
        self.lost.append(n_lost_frames)

    def on_status(self, status: mic.MicStatus) -> None:
        self.statuses.append(status)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, 1), np.float32)


def seeded_tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * t + rng.uniform(0, 2 * np.pi))
    return (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def window_rms(x: np.ndarray, window_samples: int) -> np.ndarray:
    n_windows = x.size // window_samples
    frames = x[: n_windows * window_samples].reshape(n_windows, window_samples)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


def wait_for_blocks(recorder: Recorder, n_blocks: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(recorder.blocks) < n_blocks and time.monotonic() < deadline:
        time.sleep(0.02)


@needs_pulse
@pytest.mark.pulseaudio
@pytest.mark.timeout(60)
def test_lists_and_resolves_the_virtual_microphone(vmic: VirtualMicrophone) -> None:
    devices = mic.list_input_devices()
    by_name = {d.name: d for d in devices}
    assert vmic.device_name in by_name, [d.describe() for d in devices]
    device = by_name[vmic.device_name]
    assert device.max_input_channels >= 1
    assert sum(d.is_default for d in devices) <= 1
    assert mic.resolve_device(vmic.device_name.upper()) == device  # case-insensitive
    assert mic.resolve_device("EMOSTREAM_VIRT") == device  # substring
    assert mic.resolve_device(device.index) == device
    assert mic.resolve_device(str(device.index)) == device
    assert mic.resolve_device(None).is_default or not any(d.is_default for d in devices)


@needs_pulse
@pytest.mark.pulseaudio
@pytest.mark.timeout(60)
def test_records_the_played_tone(vmic: VirtualMicrophone) -> None:
    recorder = Recorder()
    source = MicSource(
        vmic.device_name,
        sample_rate_hz=SAMPLE_RATE_HZ,
        block_ms=BLOCK_MS,
        on_audio=recorder.on_audio,
        on_status=recorder.on_status,
    )
    with source:
        wait_for_blocks(recorder, 10, timeout_s=5.0)  # some silence first
        vmic.play_array(seeded_tone(1.0), SAMPLE_RATE_HZ)
        time.sleep(0.2)
        source.check()
    assert not source.active
    audio = recorder.audio()
    block_frames = SAMPLE_RATE_HZ * BLOCK_MS // 1000
    assert audio.dtype == np.float32
    assert {b.shape for b in recorder.blocks} == {(block_frames, 1)}
    assert source.n_frames == audio.shape[0]
    assert audio.shape[0] >= SAMPLE_RATE_HZ  # at least the tone's length

    x = audio[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak_hz = float(np.argmax(spectrum)) * SAMPLE_RATE_HZ / x.size
    assert abs(peak_hz - TONE_HZ) <= 10.0, peak_hz

    rms = window_rms(x, SAMPLE_RATE_HZ // 10)
    assert rms.max() > 0.2, rms  # a 0.5-amplitude sine has RMS 0.35
    assert rms.max() > 20 * rms.min() + 1e-3, rms  # well above the silence before the tone


@needs_pulse
@pytest.mark.pulseaudio
@pytest.mark.timeout(60)
def test_unknown_or_ambiguous_device_is_explained(vmic: VirtualMicrophone) -> None:
    with pytest.raises(NoInputDeviceError) as missing:
        mic.resolve_device("no-such-device")
    message = str(missing.value)
    assert "no-such-device" in message
    assert "emostream live --list-devices" in message
    assert "emostream demo" in message
    assert vmic.device_name in message  # lists the available inputs

    with pytest.raises(NoInputDeviceError, match="ambiguous"):
        mic.resolve_device("e")  # "pulse", "default" and "emostream_virtmic" all contain it
    with pytest.raises(NoInputDeviceError, match="index 9999"):
        mic.resolve_device(9999)


@needs_pulse
@pytest.mark.pulseaudio
@pytest.mark.timeout(90)
def test_vanished_device_raises_mic_error_and_reopen_recovers() -> None:
    recorder = Recorder()
    with virtual_microphone(SAMPLE_RATE_HZ) as first, portaudio_sees(first):
        source = MicSource(
            first.device_name,
            sample_rate_hz=SAMPLE_RATE_HZ,
            on_audio=recorder.on_audio,
            on_status=recorder.on_status,
            stall_timeout_s=1.0,
        )
        source.start()
        try:
            wait_for_blocks(recorder, 5, timeout_s=5.0)
            source.check()
            first.stop_all()  # the "microphone" is unplugged: its server is gone
            deadline = time.monotonic() + 5.0
            with pytest.raises(MicError, match="emostream_virtmic"):
                while time.monotonic() < deadline:
                    source.check()
                    time.sleep(0.05)
            assert recorder.statuses[-1].kind in ("device_lost", "stalled")
            with pytest.raises(MicError):
                source.check()  # stays failed until reopen()

            with virtual_microphone(SAMPLE_RATE_HZ) as second, portaudio_sees(second):
                device = source.reopen()
                assert device.name == second.device_name
                n_before = len(recorder.blocks)
                wait_for_blocks(recorder, n_before + 5, timeout_s=5.0)
                source.check()
                assert len(recorder.blocks) >= n_before + 5
                source.stop()
        finally:
            source.stop()


def test_missing_portaudio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_portaudio(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(NoInputDeviceError, match="libportaudio2"):
        mic.list_input_devices()
    with pytest.raises(NoInputDeviceError, match="libportaudio2"):
        MicSource(None)


def test_block_must_be_whole_samples() -> None:
    device = InputDevice(0, "fake", 2, 11025, True)
    with pytest.raises(ValueError, match="whole number of samples"):
        MicSource(device, block_ms=20)  # 220.5 samples
    with pytest.raises(ValueError, match="channels=3 but .fake. has 2"):
        MicSource(device, sample_rate_hz=16000, channels=3)
    assert MicSource(device, sample_rate_hz=16000).block_frames == 320


class FakeStatus:
    def __init__(self, input_overflow: bool) -> None:
        self.input_overflow = input_overflow


class FakeTime:
    def __init__(self, adc_time_s: float) -> None:
        self.inputBufferAdcTime = adc_time_s


def test_overflow_is_counted_from_adc_timestamps_and_a_raising_callback_aborts() -> None:
    """Drive the PortAudio callback by hand: no device needed."""
    recorder = Recorder()
    device = InputDevice(0, "fake", 1, 16000, True)
    source = MicSource(device, on_audio=recorder.on_audio, on_status=recorder.on_status)
    block = np.ones((320, 1), np.float32)
    source._callback(block, 320, FakeTime(10.0), FakeStatus(False))
    source._callback(block, 320, FakeTime(10.02), FakeStatus(False))
    source._callback(block, 320, FakeTime(10.54), FakeStatus(True))  # 0.5 s = 8000 frames missing
    source._callback(block, 320, FakeTime(0.0), FakeStatus(True))  # no timestamps: one block's worth
    assert recorder.lost == [0, 0, 8000, 320]
    assert (source.n_frames, source.n_lost_frames, source.n_overflows) == (4 * 320, 8320, 2)
    assert [s.kind for s in recorder.statuses] == ["input_overflow", "input_overflow"]
    assert recorder.statuses[0].frame_index == 640
    recorder.blocks[0][:] = 0.0
    assert block.min() == 1.0  # the callee got a copy

    def broken(block: np.ndarray, n_lost_frames: int) -> None:
        raise RuntimeError("boom")

    source.on_audio = broken
    try:
        sd = mic._sounddevice()  # only for CallbackAbort
    except NoInputDeviceError as exc:
        pytest.skip(str(exc))
    with pytest.raises(sd.CallbackAbort):
        source._callback(block, 320, FakeTime(0.0), FakeStatus(False))
    assert recorder.statuses[-1].kind == "callback_error"
    with pytest.raises(MicError, match="boom"):
        source.check()


def mic_latencies_ms(
    vmic: VirtualMicrophone, model_dir: Any, rate_hz: int, block_ms: int, n_windows: int
) -> list[float]:
    """Microphone -> Runtime as `emostream live` wires it; for each estimate, its publication time minus the
    arrival of the block that holds the window's last sample (ms)."""
    from wsutil import make_runtime

    hop_s = 0.5
    runtime = make_runtime(model_dir, hop_s=hop_s, max_streams=1)
    blocks: list[tuple[int, float]] = []  # (input frames up to the block's end, its arrival)
    published: list[tuple[float, float]] = []  # (t_end_s, publication time)
    with runtime:
        handle = runtime.open_stream(
            "mic", rate_hz, 1, on_estimate=lambda e: published.append((e.t_end_s, time.monotonic()))
        )

        def on_audio(block: np.ndarray, n_lost: int) -> None:
            now = time.monotonic()
            blocks.append(((blocks[-1][0] if blocks else 0) + len(block), now))
            handle.push(block, arrival_s=now)

        source = MicSource(vmic.device_name, sample_rate_hz=rate_hz, block_ms=block_ms, on_audio=on_audio)
        with source:
            deadline = time.monotonic() + hop_s * n_windows + 10.0
            while len(published) < n_windows and time.monotonic() < deadline:
                time.sleep(0.05)
                source.check()
    assert len(published) >= n_windows, (rate_hz, block_ms, len(published))
    out = []
    for t_end_s, at in published[:n_windows]:
        needed = -(-round(t_end_s * 16000) * rate_hz // 16000)  # input frames up to the window's end
        arrival = next(t for frames, t in blocks if frames >= needed)
        out.append((at - arrival) * 1000)
    return out


@needs_pulse
@pytest.mark.pulseaudio
@pytest.mark.timeout(120)
def test_mic_latency_does_not_depend_on_the_rate(vmic: VirtualMicrophone, tiny_model_dir: Any) -> None:
    """A 48 kHz microphone in 100 ms blocks gets each estimate as soon as a 16 kHz one does (nothing held back)."""
    p50 = {
        rate: float(np.median(mic_latencies_ms(vmic, tiny_model_dir, rate, 100, n_windows=6)))
        for rate in (16000, 48000)
    }
    print("microphone latency p50 (ms):", {rate: round(v, 1) for rate, v in p50.items()})
    assert p50[48000] <= p50[16000] + 15.0, p50
    assert p50[48000] < 60.0, p50
