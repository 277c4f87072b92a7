"""The browser page of ``emostream serve``: its files and origins, and the live meter in a real headless Chromium.

Chromium gets a fake microphone that plays the bundled demo clip (in a loop), opens
``/?autostart=1&token=...`` on a real server with a token, and is driven over the DevTools
protocol (tests/chromium.py). Checked: ``ready`` arrives, estimates are drawn with one bar per
class of the model (the labels ``ready`` announces), the label on the page is the last estimate's,
the latency the page measures is bounded, the wall (``/wall``) shows the stream, a wrong token
gets a clear message, and no console errors. ``EMOSTREAM_SCREENSHOT=docs/img/browser.png`` also
saves the screenshot the README shows.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from chromium import Chromium, chromium_binary
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsutil import ServeProcess

from emostream.streamer.cli.options import DEMO_CLIP

TOKEN = "page-t0ken"
HOP_S = 0.5
N_ESTIMATES = 10
README_ESTIMATES = 50  # 25 s of the demo clip on the timeline of the README's screenshot
LATENCY_P50_BOUND_MS = 400.0  # browser-measured, on a loaded 2-core CI machine

needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="chromium not installed: apt-get install chromium (.ci/apt-packages.txt)",
)


@pytest.fixture(scope="module")
def server():
    with ServeProcess(["--hop-s", str(HOP_S)], env={"EMOSTREAM_TOKEN": TOKEN}) as srv:
        yield srv


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_page_files_with_their_content_types(server: ServeProcess) -> None:
    expected = {
        "/": "text/html; charset=utf-8",
        "/wall": "text/html; charset=utf-8",
        "/static/app.js": "text/javascript; charset=utf-8",
        "/static/capture-worklet.js": "text/javascript; charset=utf-8",
        "/static/common.js": "text/javascript; charset=utf-8",
        "/static/wall.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
    }
    for path, content_type in expected.items():
        status, got_type, body = get(server.port, path)
        assert (status, got_type) == (200, content_type), path
        assert len(body) > 100
    assert b"registerProcessor" in get(server.port, "/static/capture-worklet.js")[2]
    assert get(server.port, "/static/nope.js")[0] == 404
    assert get(server.port, "/static/../app.py")[0] == 404


def test_own_loopback_origins_only(server: ServeProcess) -> None:
    port = server.port

    async def status_of(origin: str, host: str | None = None) -> int:
        headers = {"Host": host} if host is not None else None
        try:
            async with connect(f"{server.url}/feed?token={TOKEN}", origin=origin, additional_headers=headers):  # type: ignore[arg-type]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def main() -> None:
        for host in ("127.0.0.1", "localhost", "[::1]"):
            assert await status_of(f"http://{host}:{port}") == 101, host
        assert await status_of(f"http://127.0.0.1:{port + 1}") == 403  # another port: another site
        assert await status_of(f"https://127.0.0.1:{port}") == 403
        # DNS rebinding: a page of rebound.example resolved to 127.0.0.1 sends Host and Origin alike
        rebound = f"rebound.example:{port}"
        assert await status_of(f"http://{rebound}", host=rebound) == 403

    asyncio.run(main())


def fake_microphone(tmp_path: Path) -> Path:
    """The demo clip, its first two seconds 12 dB hotter and clipped at full scale (a gain set too high)."""
    audio, rate = sf.read(DEMO_CLIP, dtype="float32")
    audio = np.asarray(audio).copy()
    audio[: 2 * rate] = np.clip(audio[: 2 * rate] * 4.0, -1.0, 1.0)
    wav = tmp_path / "mic.wav"
    sf.write(wav, audio, rate, subtype="PCM_16")
    return wav


PAGE_STATE = """(() => {
  const s = window.emostream;
  const rows = [...document.querySelectorAll('#bars .bar-row .bar-name')].map((e) => e.textContent);
  return {
    status: s.status, ready: s.ready, n: s.nEstimates, last: s.lastEstimate, latencies: s.latenciesMs,
    shownLabel: document.getElementById('label').textContent, barNames: rows, errors: s.errors,
    message: document.getElementById('message').textContent, clipped: s.clippedFrames,
  };
})()"""


@needs_chromium
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_live_meter_in_chromium(server: ServeProcess, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{server.port}"

    async def main() -> tuple[dict, dict, dict, list[str]]:
        async with Chromium(fake_audio=fake_microphone(tmp_path)) as browser:
            meter = await browser.open(f"{base}/?autostart=1&token={TOKEN}")
            wall = await browser.open(f"{base}/wall?token={TOKEN}")
            await meter.wait_for("window.emostream && window.emostream.ready", timeout_s=45)
            await meter.wait_for(f"window.emostream.nEstimates >= {N_ESTIMATES}", timeout_s=45)
            state = await meter.evaluate(PAGE_STATE)
            await meter.screenshot(tmp_path / "browser.png")
            if os.environ.get("EMOSTREAM_SCREENSHOT"):  # the README's: a fuller timeline first
                await meter.wait_for(f"window.emostream.nEstimates >= {README_ESTIMATES}", timeout_s=60)
                await meter.screenshot(Path(os.environ["EMOSTREAM_SCREENSHOT"]))
            stream = state["ready"]["stream"]
            wall_state = await wall.wait_for(
                f"(() => {{ const c = window.emostream.streams[{stream!r}]; return c && c.last && "
                "{label: c.label.textContent, last: c.last, n: window.emostream.nEstimates}; })()",
                timeout_s=10,
            )
            await meter.evaluate("document.getElementById('stop').click()")
            stopped = await meter.wait_for(
                "window.emostream.status === 'idle' && document.getElementById('start').disabled === false",
                timeout_s=10,
            )
            assert stopped
            refused = await browser.open(f"{base}/?autostart=1&token=wrong")
            refused_state = await refused.wait_for(
                "window.emostream && window.emostream.errors.length && window.emostream", timeout_s=15
            )
            problems = meter.problems() + wall.problems()
        return state, wall_state, refused_state, problems

    state, wall_state, refused_state, problems = asyncio.run(main())
    ready, last = state["ready"], state["last"]
    assert state["status"] == "streaming" and state["errors"] == [], state
    assert ready["labels"] and state["barNames"] == ready["labels"]  # the model's classes, in its order
    assert ready["sample_rate"] >= 8000  # the AudioContext's own rate, sent in start
    assert state["n"] >= N_ESTIMATES
    assert state["clipped"] > 0  # the hot start of the fake microphone was flagged
    assert state["shownLabel"] == (last["label"] if last["speech"] else "no speech")
    assert len(state["latencies"]) >= N_ESTIMATES - 1
    assert statistics.median(state["latencies"]) < LATENCY_P50_BOUND_MS, state["latencies"]
    assert wall_state["label"] == (
        wall_state["last"]["label"] if wall_state["last"]["speech"] else "no speech"
    )
    assert "token" in refused_state["errors"][0], refused_state["errors"]
    assert problems == [], problems
    print(f"browser: {ready['sample_rate']} Hz, latency p50 {statistics.median(state['latencies']):.0f} ms")
    assert (tmp_path / "browser.png").stat().st_size > 10_000
