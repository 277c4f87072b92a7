"""The Redis broker in-process against a real redis-server: stream-id claims, and a feed that reports what it lost.

Two ``Broker`` objects stand for two workers (one publishes, the other serves a subscriber). The
publisher's queue is made tiny, so that an outage longer than it shows up as a ``gap`` message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from emostream.streamer.server.broker import Broker
from emostream.streamer.server.brokerconf import BrokerConfig, check_broker_url, redact_url
from emostream.streamer.server.redisproc import RedisServer, redis_server_path

pytestmark = pytest.mark.skipif(
    redis_server_path() is None,
    reason="redis-server is not installed (apt-get install redis-server; CI installs it from .ci/apt-packages.txt)",
)


def config(url: str, **kw: Any) -> BrokerConfig:
    fast = {
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.2,
        "heartbeat_s": 0.3,
        "claim_ttl_s": 1,
        "op_timeout_s": 1.0,
    }
    return BrokerConfig(url, **{**fast, **kw})


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.02)


def test_claims_are_unique_and_released() -> None:
    with RedisServer() as redis:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            a, b = Broker(config(redis.url)), Broker(config(redis.url))
            for x in (a, b):
                x.make_hub(loop, 4, 64)
                await x.start()
            assert await a.claim("mic") is True
            assert await b.claim("mic") is False
            await asyncio.sleep(1.5)  # past the 1-s time to live: the heartbeat kept it
            assert await b.claim("mic") is False
            a.release("mic")  # the key is deleted in the background
            for _ in range(50):
                if await b.claim("mic"):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the released id was never free")
            await a.close()
            await b.close()

        asyncio.run(main())


def test_outage_longer_than_the_queue_is_reported_as_a_gap() -> None:
    with RedisServer() as redis:

        async def main() -> list[dict[str, Any]]:
            loop = asyncio.get_running_loop()
            pub, sub = Broker(config(redis.url, pending_max=5)), Broker(config(redis.url))
            pub.make_hub(loop, 4, 64)
            hub = sub.make_hub(loop, 4, 64)
            await pub.start()
            await sub.start()
            outbox = hub.subscribe(None)
            got: list[dict[str, Any]] = []

            async def drain() -> None:
                while (text := await outbox.get()) is not None:
                    got.append(json.loads(text))

            reader = asyncio.create_task(drain())
            for seq in (0, 1):
                pub.enqueue("s", seq, json.dumps({"type": "estimate", "stream": "s", "seq": seq}))
            await until(lambda: len(got) == 2)
            await asyncio.to_thread(redis.stop)
            await until(lambda: any(m["type"] == "feed_error" for m in got))
            for seq in range(2, 12):  # 10 estimates into a queue of 5: the 5 oldest are dropped
                pub.enqueue("s", seq, json.dumps({"type": "estimate", "stream": "s", "seq": seq}))
            assert pub.dropped == 5
            await asyncio.to_thread(redis.start)
            await until(lambda: any(m.get("seq") == 11 for m in got))
            hub.unsubscribe(outbox)
            await reader
            await pub.close()
            await sub.close()
            return got

        got = asyncio.run(main())
        estimates = [m["seq"] for m in got if m["type"] == "estimate"]
        assert estimates == [0, 1, 7, 8, 9, 10, 11]
        kinds = [m["type"] for m in got]
        assert kinds.index("feed_error") < kinds.index("feed_resumed")
        gap = next(m for m in got if m["type"] == "gap")
        assert gap == {"type": "gap", "stream": "s", "after_seq": 1, "missed": 5}
        assert got[got.index(gap) + 1]["seq"] == 7  # reported just before the first estimate after it


def test_broker_urls() -> None:
    for url in ("redis://h:6379/0", "rediss://h:6380/1", "unix:///tmp/r.sock"):
        assert check_broker_url(url) == url
    for bad in ("h:6379", "http://h", "redis://", ""):
        with pytest.raises(ValueError, match="--broker"):
            check_broker_url(bad)
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://***@h:6379/0"
