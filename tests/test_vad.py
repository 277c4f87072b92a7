"""Speech gating: silence is not speech, synthetic speech is; batched silero equals silero-vad's own wrapper."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from emostream.streamer.core.vad import Vad, VadConfig
from emostream.streamer.runtime.silero import make_vad

SR = 16000
HOP = SR  # 1 s hops


def decisions(vad: Vad, audio: np.ndarray, hop: int = HOP) -> list[tuple[bool, float]]:
    """Per-window (speech, speech_prob) over ``audio`` with windows ending every hop (and a final one)."""
    state = vad.new_state()
    out = []
    ends = list(range(hop, len(audio) + 1, hop))
    if not ends or ends[-1] != len(audio):
        ends.append(len(audio))
    prev = 0
    for end in ends:
        final = end == len(audio)
        req = vad.request(state, end, final=final)
        vad.process([state], [req], [audio[req.start_sample : req.end_sample]])
        d = vad.decide(state, prev, end)
        out.append((d.speech, d.speech_prob))
        prev = end
    return out


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About 3 s of espeak-ng speech at 16 kHz, between 1 s of silence before and after."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip(
            "espeak-ng is not installed (apt-get install espeak-ng): no synthetic speech to test with"
        )
    wav = Path(tmp_path_factory.mktemp("espeak")) / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest."
    subprocess.run([exe, "-w", str(wav), "-s", "160", text], check=True, timeout=30, capture_output=True)
    speech, rate = sf.read(wav, dtype="float32")
    speech = soxr.resample(speech, rate, SR).astype(np.float32)
    silence = np.zeros(SR, dtype=np.float32)
    return np.concatenate([silence, speech, silence])


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_silence_and_faint_noise_are_not_speech(method: str) -> None:
    vad = make_vad(VadConfig(method=method), SR, HOP)
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(2 * SR), rng.standard_normal(2 * SR) * 1e-4]).astype(np.float32)
    assert [speech for speech, _ in decisions(vad, audio)] == [False] * 4


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_espeak_speech_is_speech(method: str, espeak_speech: np.ndarray) -> None:
    vad = make_vad(VadConfig(method=method), SR, HOP)
    result = decisions(vad, espeak_speech)
    assert result[0] == (False, 0.0)  # the leading second of silence
    n_speech_hops = (len(espeak_speech) - 2 * SR) // SR
    assert all(speech for speech, _ in result[1 : 1 + n_speech_hops])
    assert max(p for _, p in result) > 0.5


def three_streams_in_lockstep(vad, speech: np.ndarray) -> tuple[list[np.ndarray], list]:
    """Three streams (``speech`` from three offsets) through two batched calls of ``vad``, each call
    giving every stream a different amount of audio; returns the audios and their states."""
    audios = [speech[k * 3000 :] for k in range(3)]
    states = [vad.new_state() for _ in audios]
    ends = [SR + 700, 2 * SR, 3 * SR + 100]  # different amounts of audio per stream in the same call
    for _ in range(2):
        reqs = [vad.request(s, e) for s, e in zip(states, ends, strict=True)]
        vad.process(
            states, reqs, [a[r.start_sample : r.end_sample] for a, r in zip(audios, reqs, strict=True)]
        )
        ends = [e + SR for e in ends]
    return audios, states


@pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")
def test_batched_lockstep_equals_silero_wrapper(espeak_speech: np.ndarray) -> None:
    """Streams of different progress in one lockstep call give silero-vad's own per-chunk probabilities
    (at stride 1: silero-vad's wrapper runs every chunk)."""
    from silero_vad import load_silero_vad

    vad = make_vad(VadConfig(silero_stride_chunks=1, silero_floor_dbfs=None), SR, HOP)
    audios, states = three_streams_in_lockstep(vad, espeak_speech)
    for audio, state in zip(audios, states, strict=True):
        chunk_ends, probs = state.recent()
        reference = load_silero_vad(onnx=True)
        expected = [
            float(reference(torch.from_numpy(audio[end - 512 : end].copy()), SR))
            for end in range(512, int(chunk_ends[-1]) + 1, 512)
        ]
        np.testing.assert_allclose(probs, expected[-len(probs) :], atol=1e-5)


@pytest.mark.parametrize("stride", [3, 4])
def test_strided_silero_is_independent_of_batching_and_request_sizes(
    stride: int, espeak_speech: np.ndarray
) -> None:
    """With a stride, the chunks that run sit on the absolute grid (k % stride == 0) whatever the calls'
    sizes, and three streams in lockstep get exactly what each gets alone, in other call sizes."""
    vad = make_vad(VadConfig(silero_stride_chunks=stride), SR, HOP)
    audios, states = three_streams_in_lockstep(vad, espeak_speech)
    for audio, state in zip(audios, states, strict=True):
        chunk_ends, probs = state.recent()
        assert len(chunk_ends) > 4 and np.all(chunk_ends % (stride * 512) == 512 * (1 % stride))
        alone = vad.new_state()
        last = int(chunk_ends[-1])
        for end in [*range(777, last, 777), last]:  # other call sizes, one stream
            req = vad.request(alone, end)
            vad.process([alone], [req], [audio[req.start_sample : req.end_sample]])
        alone_ends, alone_probs = alone.recent()
        k = len(probs)
        np.testing.assert_array_equal(alone_ends[-k:], chunk_ends)
        np.testing.assert_allclose(alone_probs[-k:], probs, atol=1e-6)


def test_chunks_below_the_floor_skip_silero_and_keep_its_state(espeak_speech: np.ndarray) -> None:
    """Silence under the floor gets probability 0 and leaves the recurrent state untouched; then speech
    after it gets exactly what it gets with the silence cut out."""
    gated = make_vad(VadConfig(silero_stride_chunks=1), SR, HOP)
    n = 64 * 512  # about 2 s, a whole number of chunks
    silence = np.zeros(n, dtype=np.float32)
    state = gated.new_state()
    gated.process([state], [gated.request(state, n)], [silence])
    assert not state.state.any() and not state.recent()[1].any()
    speech = espeak_speech[SR : SR + n]
    gated.process([state], [gated.request(state, 2 * n)], [speech])
    alone = gated.new_state()
    gated.process([alone], [gated.request(alone, n)], [speech])
    assert alone.recent()[1].max() > 0.5  # it is speech
    np.testing.assert_allclose(state.recent()[1][-64:], alone.recent()[1][-64:], atol=1e-6)


def test_disabled_gate_passes_everything() -> None:
    vad = make_vad(VadConfig(enabled=False), SR, HOP)
    assert vad.decide(vad.new_state(), 0, SR).speech


def test_the_silero_gate_needs_its_session() -> None:
    with pytest.raises(ValueError, match="session"):
        Vad(VadConfig(), SR, HOP)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        VadConfig(method="webrtc")
    with pytest.raises(ValueError, match="min_speech_ratio"):
        VadConfig(min_speech_ratio=0.0)
    with pytest.raises(ValueError, match="silero_stride_chunks"):
        VadConfig(silero_stride_chunks=0)
    with pytest.raises(ValueError, match="silero_floor_dbfs"):
        VadConfig(silero_floor_dbfs=3.0)
    with pytest.raises(ValueError, match="energy gate"):
        make_vad(VadConfig(), 22050, 22050)
    assert make_vad(VadConfig(method="energy"), 22050, 22050).chunk_samples == 706
