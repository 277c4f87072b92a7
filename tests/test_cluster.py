"""Scale-out with the real parts: `emostream serve --workers 2`, `--broker`, and a real redis-server.

Two servers on one broker share one feed and one set of stream ids; under --workers 2 a killed
worker disturbs no other worker's streams and is replaced; a Redis restart mid-stream is noticed
by the feed only, which reports it and resumes without losing an estimate; /healthz and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from wsutil import ServeProcess, StreamResult, collect, send_paced, synth_audio

from emostream.models.windows import window_ends
from emostream.streamer.cli.workers import resolve_workers
from emostream.streamer.server.redisproc import RedisServer, redis_server_path

HOP_S = 0.5
RATE_HZ = 16000
FAST = ["--no-vad", "--hop-s", str(HOP_S), "--limit-realtime-factor", "1000", "--limit-burst-s", "1000"]
NO_REDIS = (
    "redis-server is not installed (apt-get install redis-server; CI installs it from .ci/apt-packages.txt)"
)
needs_redis = pytest.mark.skipif(redis_server_path() is None, reason=NO_REDIS)


def n_windows(seconds: float) -> int:
    return len(window_ends(round(seconds * RATE_HZ), round(HOP_S * RATE_HZ)))


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in the Prometheus text (every label set)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


# ---- clients ------------------------------------------------------------------------------------


def start_message(stream: str) -> str:
    """The ``start`` message of a 16-bit mono stream at ``RATE_HZ`` named ``stream``."""
    return json.dumps(
        {"type": "start", "sample_rate": RATE_HZ, "encoding": "pcm_s16le", "channels": 1, "stream": stream}
    )


async def open_ingest(
    url: str, stream: str, query: str = ""
) -> tuple[ClientConnection, StreamResult, asyncio.Task[None]]:
    """An ingest connection with its stream started (``ready`` received) and a reader collecting replies."""
    ws = await connect(url + "/ingest" + query, compression=None, max_size=2**22)
    await ws.send(start_message(stream))
    result = StreamResult()
    result.ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert result.ready["type"] == "ready", result.ready
    return ws, result, asyncio.create_task(collect(ws, result, 60))


async def send_audio(ws: ClientConnection, seconds: float, speed: float, seed: int) -> None:
    """``seconds`` of audio at ``speed`` x real time in 50-ms frames, then stop (quietly if the server went)."""
    audio = synth_audio(seconds, RATE_HZ, 1, seed=seed)
    try:
        await send_paced(ws, audio, RATE_HZ, frame_s=0.05, speed=speed)
        await ws.send(json.dumps({"type": "stop"}))
    except Exception:
        pass


async def subscribe(
    url: str, stream: str | None = None
) -> tuple[ClientConnection, StreamResult, asyncio.Task[None]]:
    ws = await connect(url + "/feed" + (f"?stream={stream}" if stream else ""), compression=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert hello["type"] == "subscribed", hello
    result = StreamResult()
    return ws, result, asyncio.create_task(collect(ws, result, 120))


async def wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


def seqs(result: StreamResult, stream: str) -> list[int]:
    return [m["seq"] for m in result.estimates if m["stream"] == stream]


def assert_complete(result: StreamResult, seconds: float) -> None:
    assert result.error is None, result.error
    assert [m["seq"] for m in result.estimates] == list(range(n_windows(seconds)))
    assert result.end is not None and result.close_code == 1000


# ---- the worker processes of a --workers server -------------------------------------------------


def worker_pids(server: ServeProcess) -> list[int]:
    assert server.proc is not None
    kids = psutil.Process(server.proc.pid).children()
    return [p.pid for p in kids if "spawn_main" in " ".join(p.cmdline())]


def worker_of(ws: ClientConnection, pids: list[int]) -> int:
    """The worker process holding this client connection (matched by the client's port)."""
    port = ws.local_address[1]
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.raddr and c.raddr.port == port:
                return pid
    raise AssertionError(f"no worker holds the connection from port {port}")


# ---- tests --------------------------------------------------------------------------------------


@pytest.fixture
def redis_server():
    if redis_server_path() is None:
        pytest.skip(NO_REDIS)
    with RedisServer() as server:
        yield server


@needs_redis
def test_feed_and_stream_ids_across_two_servers(tiny_model_dir: Path, redis_server: RedisServer) -> None:
    args = ["--model", str(tiny_model_dir), *FAST, "--broker", redis_server.url]
    with ServeProcess(args) as a, ServeProcess(args) as b:

        async def main() -> tuple[dict[str, StreamResult], StreamResult, StreamResult, StreamResult]:
            all_ws, feed_all, feed_all_task = await subscribe(b.url)
            one_ws, feed_one, feed_one_task = await subscribe(b.url, "alpha")
            opened = {s: await open_ingest(a.url, s) for s in ("alpha", "beta")}
            # the id is live on server a: server b refuses it with the same error as one server does
            dup_ws, dup, dup_task = await open_ingest_refused(b.url, "alpha")
            await asyncio.gather(
                *(send_audio(ws, 3.25, 8.0, seed=i) for i, (ws, _, _) in enumerate(opened.values()))
            )
            await asyncio.gather(*(task for _, _, task in opened.values()))
            want = 2 * n_windows(3.25)
            await wait_for(lambda: len(feed_all.estimates) >= want, 15)
            for ws in (all_ws, one_ws):
                await ws.close()
            await asyncio.gather(feed_all_task, feed_one_task, dup_task)
            return {s: r for s, (_, r, _) in opened.items()}, feed_all, feed_one, dup

        ingest, feed_all, feed_one, dup = asyncio.run(main())
        assert dup.error is not None and dup.error["code"] == "stream_in_use" and dup.close_code == 1008
        for stream, result in ingest.items():
            assert_complete(result, 3.25)
            # every estimate, in order, identical to what the ingest client got from the other server
            assert [m for m in feed_all.estimates if m["stream"] == stream] == result.estimates
        assert feed_one.estimates == ingest["alpha"].estimates
        assert not feed_all.others and not feed_one.others  # no lag, gap or broker messages
        status, metrics = http_get(a.port, "/metrics")
        assert status == 200 and metric(metrics, "emostream_estimates_total") == 2 * n_windows(3.25)
        assert metric(metrics, "emostream_broker_publish_lag_seconds_count") == 2 * n_windows(3.25)


async def open_ingest_refused(
    url: str, stream: str
) -> tuple[ClientConnection, StreamResult, asyncio.Task[None]]:
    ws = await connect(url + "/ingest", compression=None)
    await ws.send(start_message(stream))
    result = StreamResult()
    return ws, result, asyncio.create_task(collect(ws, result, 30))


@needs_redis
def test_workers_kill_one_the_other_goes_on(tiny_model_dir: Path) -> None:
    with ServeProcess(["--model", str(tiny_model_dir), *FAST, "--workers", "2"]) as server:
        status, body = http_get(server.port, "/healthz")
        assert status == 200 and json.loads(body)["workers_alive"] == 2, body
        pids = worker_pids(server)
        assert len(pids) == 2

        async def main() -> tuple[
            dict[int, list[StreamResult]], StreamResult, int, ClientConnection, asyncio.Task[None]
        ]:
            feed_ws, feed, feed_task = await subscribe(server.url)
            keep = worker_of(feed_ws, pids)
            streams: dict[int, list[tuple[ClientConnection, StreamResult, asyncio.Task[None]]]] = {
                p: [] for p in pids
            }
            for i in range(40):  # until both workers hold a stream (the kernel spreads connections)
                opened = await open_ingest(server.url, f"k{i}")
                streams[worker_of(opened[0], pids)].append(opened)
                if all(streams.values()) and i >= 3:
                    break
            assert all(streams.values()), "every connection went to one worker"
            victim = next(p for p in pids if p != keep)
            senders = [
                asyncio.create_task(send_audio(ws, 6.0, 3.0, seed=i))
                for i, (ws, _, _) in enumerate(x for v in streams.values() for x in v)
            ]
            await asyncio.sleep(1.0)
            psutil.Process(victim).send_signal(signal.SIGKILL)
            await asyncio.gather(*senders)
            await asyncio.gather(*(t for v in streams.values() for _, _, t in v))
            want = n_windows(6.0) * len(streams[keep])
            await wait_for(lambda: len(feed.estimates) >= want, 15)
            return {p: [r for _, r, _ in v] for p, v in streams.items()}, feed, keep, feed_ws, feed_task

        async def run() -> tuple[Any, ...]:
            results, feed, keep, feed_ws, feed_task = await main()
            # the parent replaces the dead worker
            ok = await wait_for(
                lambda: json.loads(http_get(server.port, "/healthz")[1])["workers_alive"] == 2, 60
            )
            assert ok, server.output[-3000:]
            # SIGTERM: every worker closes its connections with 1001, the parent exits 0
            code = await asyncio.to_thread(server.terminate)
            await feed_task
            return results, feed, keep, code

        results, feed, keep, code = asyncio.run(run())
        for result in results[keep]:
            assert_complete(result, 6.0)
            assert [m for m in feed.estimates if m["stream"] == result.ready["stream"]] == result.estimates
        for pid, killed in results.items():
            if pid != keep:
                for result in killed:
                    assert result.end is None and result.close_code != 1000
        assert "died (signal 9)" in server.output and "starting another" in server.output
        assert feed.close_code == 1001
        assert code == 0


@needs_redis
def test_redis_restart_mid_stream_only_the_feed_notices(
    tiny_model_dir: Path, redis_server: RedisServer
) -> None:
    with ServeProcess(["--model", str(tiny_model_dir), *FAST, "--broker", redis_server.url]) as server:

        async def main() -> tuple[StreamResult, StreamResult, tuple[int, str]]:
            feed_ws, feed, feed_task = await subscribe(server.url)
            ws, result, task = await open_ingest(server.url, "steady")
            sender = asyncio.create_task(send_audio(ws, 8.0, 2.0, seed=7))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_server.stop)
            assert await wait_for(lambda: "feed_error" in feed.types, 10), feed.others
            during = await asyncio.to_thread(http_get, server.port, "/healthz")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_server.start)
            await sender
            await task
            await wait_for(lambda: len(feed.estimates) >= n_windows(8.0), 20)
            await feed_ws.close()
            await feed_task
            return result, feed, during

        result, feed, (status, body) = asyncio.run(main())
        assert_complete(result, 8.0)  # the ingest client noticed nothing
        assert status == 503 and json.loads(body)["broker"] == "lost"
        lost = next(m for m in feed.others if m["type"] == "feed_error")
        assert lost["code"] == "broker_lost"
        assert feed.types.index("feed_error") < feed.types.index("feed_resumed")
        assert "gap" not in feed.types
        assert feed.estimates == result.estimates  # nothing lost across the restart
        assert json.loads(http_get(server.port, "/healthz")[1])["broker"] == "connected"


def test_broker_unreachable_at_start(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A clear message and exit code 3, from one process, from the --workers parent, and without redis-server."""
    base = [
        sys.executable,
        "-m",
        "emostream.models.cli",
        "serve",
        "--port",
        "0",
        "--model",
        str(tiny_model_dir),
    ]
    bad = f"unix://{tmp_path}/no-redis.sock"
    runs = [  # at once: each spends most of its few seconds importing torch
        subprocess.Popen(base + extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for extra, env in (
            (["--broker", bad], None),
            (["--workers", "2", "--broker", bad], None),
            (["--workers", "2"], {"PATH": str(tmp_path)}),  # no redis-server on PATH
        )
    ]
    (one, one_err), (parent, parent_err), (missing, missing_err) = [
        (p.wait(120), p.communicate()[1]) for p in runs
    ]
    assert one == 3 and f"cannot reach the broker at {bad}" in one_err, one_err[-2000:]
    assert parent == 3 and f"cannot reach the broker at {bad}" in parent_err, parent_err[-2000:]
    assert missing == 3 and "install redis-server" in missing_err and "--broker" in missing_err, missing_err[
        -2000:
    ]


def test_workers_option() -> None:
    assert resolve_workers("3") == 3
    assert resolve_workers("auto") >= 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="--workers"):
            resolve_workers(bad)


def test_healthz_and_metrics_of_one_process(tiny_model_dir: Path) -> None:
    token = "t0ken-for-metrics"
    with ServeProcess(["--model", str(tiny_model_dir), *FAST], env={"EMOSTREAM_TOKEN": token}) as server:
        status, body = http_get(server.port, "/healthz")  # no token: load balancers probe it
        health = json.loads(body)
        assert status == 200 and health["broker"] == "none" and health["workers_alive"] == 1

        async def main() -> StreamResult:
            ws, result, task = await open_ingest(server.url, "m1", f"?token={token}")
            await send_audio(ws, 2.25, 10.0, seed=3)
            await task
            async with connect(server.url + f"/ingest?token={token}") as bad:  # audio before start: no_start
                await bad.send(b"\x00\x00")
                await collect(bad, StreamResult(), 10)
            return result

        result = asyncio.run(main())
        assert_complete(result, 2.25)
        assert http_get(server.port, "/metrics")[0] == 401
        status, text = http_get(server.port, "/metrics", {"Authorization": f"Bearer {token}"})
        assert status == 200
        assert metric(text, "emostream_estimates_total") == n_windows(2.25)
        assert metric(text, "emostream_latency_seconds_count") == n_windows(2.25)
        assert metric(text, "emostream_batch_windows_sum") == n_windows(2.25)
        assert 'emostream_errors_total{code="no_start"} 1.0' in text.splitlines()
        assert metric(text, "emostream_streams") == 0
