"""The broker's settings, its URL check and client factory, and the cluster messages of /feed.

``BrokerConfig`` is how a worker uses Redis (keys, batching, buffering, claim lifetime, backoff);
``FeedErrorMessage``, ``FeedResumedMessage`` and ``GapMessage`` are what /feed subscribers of a
cluster get besides estimates (docs/protocol.md). The link itself: ``streamer.server.broker``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BROKER_SCHEMES = ("redis", "rediss", "unix")


class BrokerUnavailableError(RuntimeError):
    """The broker did not answer at start-up."""


def redact_url(url: str | None) -> str:
    """The broker URL without its password, for messages and logs."""
    if not url:
        return "none"
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def check_broker_url(url: str) -> str:
    """``url`` unchanged if its scheme is one we speak; ValueError with the accepted forms otherwise."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in BROKER_SCHEMES or len(url) <= len(scheme) + 3:
        raise ValueError(
            f"--broker {redact_url(url)!r}: use redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///path/redis.sock"
        )
    return url


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How a worker uses Redis: keys, batching, buffering, claim lifetime and reconnection."""

    url: str
    key_prefix: str = "emostream"
    feed_maxlen: int = 100_000  # entries kept in the Stream (XADD MAXLEN ~)
    publish_batch: int = 512  # XADDs per pipeline at most
    publish_delay_s: float = 0.002  # wait this long after the first queued estimate, to batch
    pending_max: int = 50_000  # estimates held while Redis is away; the oldest dropped beyond
    read_count: int = 1024
    read_block_ms: int = 1000
    idle_poll_s: float = 0.5  # without /feed subscribers: refresh the feed position this often, read nothing
    claim_ttl_s: int = 10  # a dead worker's stream ids are free again after this long
    heartbeat_s: float = 3.0
    op_timeout_s: float = 2.0
    backoff_min_s: float = 0.1
    backoff_max_s: float = 5.0
    gap_streams: int = 100_000  # streams whose last seq the feed remembers (for gap reports)

    def __post_init__(self) -> None:
        check_broker_url(self.url)
        if not 0 < self.heartbeat_s < self.claim_ttl_s:
            raise ValueError("need 0 < heartbeat_s < claim_ttl_s")

    @property
    def feed_key(self) -> str:
        return f"{self.key_prefix}:feed"

    def claim_key(self, stream_id: str) -> str:
        return f"{self.key_prefix}:stream:{stream_id}"


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class FeedErrorMessage:
    """To every subscriber when the broker is lost; the subscription stays open."""

    code: str
    message: str

    def to_json(self) -> str:
        return _dumps({"type": "feed_error", "code": self.code, "message": self.message, "stream": None})


@dataclass(frozen=True, slots=True)
class FeedResumedMessage:
    """To every subscriber once the broker answers again."""

    down_s: float

    def to_json(self) -> str:
        return _dumps({"type": "feed_resumed", "down_s": round(self.down_s, 3)})


@dataclass(frozen=True, slots=True)
class GapMessage:
    """Estimates of ``stream`` the feed never got (seq ``after_seq + 1`` .. ``after_seq + missed``)."""

    stream: str
    after_seq: int
    missed: int

    def to_json(self) -> str:
        return _dumps(
            {"type": "gap", "stream": self.stream, "after_seq": self.after_seq, "missed": self.missed}
        )


def redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def connect_client(url: str, op_timeout_s: float, read_timeout_s: float) -> Any:
    """A redis-py asyncio client that fails fast (no retries: the broker's own loops retry)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=op_timeout_s,
        socket_timeout=read_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def ping_broker(url: str, timeout_s: float = 3.0) -> None:
    """PING ``url`` once (blocking); ``BrokerUnavailableError`` with the reason if it does not answer."""
    from redis import Redis

    client = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except Exception as exc:
        raise BrokerUnavailableError(f"cannot reach the broker at {redact_url(url)}: {exc}") from None
    finally:
        client.close()
