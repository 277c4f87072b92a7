"""``python -m benchmarks.redis_rate``: how many estimates a second one Python producer writes to Redis.

The broker's write path (``streamer.server.broker``): ``XADD emostream:feed MAXLEN ~ 100000 * s ID q
SEQ e JSON`` with redis-py's asyncio client, from one event loop, with an estimate's JSON (about 350
bytes) as the payload. Two ways: each XADD awaited before the next (one round trip each), and
pipelined in batches as the broker sends them (512 per pipeline). Also the read side: one XREAD
consumer draining what was written. The server is a private ``redis-server`` on a unix socket
(``streamer.server.redisproc``), or ``--broker URL``. Warm-up first, then ``--repeats`` runs;
median and best reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

ESTIMATE = {
    "type": "estimate", "stream": "bench-0001", "seq": 0, "t_start_s": 8.0, "t_end_s": 13.0, "label": "happy",
    "confidence": 0.61234, "probs": {"angry": 0.05, "happy": 0.61234, "neutral": 0.28, "sad": 0.05766},
    "raw_probs": {"angry": 0.04121, "happy": 0.70312, "neutral": 0.20011, "sad": 0.05556},
    "speech": True, "speech_prob": 0.98, "latency_ms": 41.2, "model": "default", "dropped_samples": 0,
}  # fmt: skip


async def _rates(url: str, n: int, batch: int, repeats: int) -> dict[str, Any]:
    from emostream.streamer.server.brokerconf import BrokerConfig, connect_client

    cfg = BrokerConfig(url, key_prefix="emostream-bench")
    client = connect_client(url, 5.0, 30.0)
    text = json.dumps(ESTIMATE, separators=(",", ":"))
    fields = [{"s": f"bench-{i % 200:04d}", "q": i, "e": text} for i in range(n)]

    async def one_by_one() -> float:
        t0 = time.perf_counter()
        for f in fields:
            await client.xadd(cfg.feed_key, f, maxlen=cfg.feed_maxlen, approximate=True)
        return n / (time.perf_counter() - t0)

    async def pipelined() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            async with client.pipeline(transaction=False) as pipe:
                for f in fields[i : i + batch]:
                    pipe.xadd(cfg.feed_key, f, maxlen=cfg.feed_maxlen, approximate=True)
                await pipe.execute()
        return n / (time.perf_counter() - t0)

    async def read_back() -> float:
        await client.delete(cfg.feed_key)
        await pipelined()
        last, got = "0-0", 0
        t0 = time.perf_counter()
        while got < n:
            reply = await client.xread({cfg.feed_key: last}, count=cfg.read_count, block=1000)
            for _key, entries in reply or ():
                got += len(entries)
                last = entries[-1][0]
        return n / (time.perf_counter() - t0)

    try:
        await client.delete(cfg.feed_key)
        await one_by_one()  # warm-up
        out: dict[str, Any] = {}
        for name, fn in (("xadd_awaited_per_s", one_by_one), ("xadd_pipelined_per_s", pipelined),
                         ("xread_per_s", read_back)):  # fmt: skip
            runs = [await fn() for _ in range(repeats)]
            out[name] = {"median": statistics.median(runs), "best": max(runs), "runs": runs}
        await client.delete(cfg.feed_key)
        return out
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.redis_rate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--broker", default=None, help="Redis URL (default: a private redis-server on a unix socket)"
    )
    p.add_argument("-n", type=int, default=20_000, help="XADDs per run (default 20000)")
    p.add_argument("--batch", type=int, default=512, help="XADDs per pipeline (default 512, as the broker)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each (default 5)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    from emostream.benchmarks.machine import describe_machine
    from emostream.streamer.server.redisproc import RedisServer

    machine = describe_machine()
    print(f"machine: {machine.one_line()}", flush=True)
    redis = None if args.broker else RedisServer().start()
    url = args.broker or redis.url  # type: ignore[union-attr]
    try:
        rates = asyncio.run(_rates(url, args.n, args.batch, args.repeats))
    finally:
        if redis is not None:
            redis.close()
    where = "a private redis-server on a unix socket" if redis is not None else args.broker
    print(f"one Python producer (redis-py asyncio, standard asyncio loop) -> {where}, {args.n} estimates per run, "
          f"{args.repeats} runs:")  # fmt: skip
    for name, r in rates.items():
        print(f"  {name:22s} median {r['median']:9.0f}  best {r['best']:9.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine.to_dict(), "command": "python -m benchmarks.redis_rate "
                       + " ".join(sys.argv[1:]), **rates}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
