"""The Prometheus metrics of a server process (served on GET /metrics by ``streamer.server.ops``).

``Metrics`` holds the process's metrics in its own registry (``prometheus-client``). Under
``--workers N`` the parent sets ``PROMETHEUS_MULTIPROC_DIR`` before starting the workers, so every
worker writes its values to files there and any worker's ``/metrics`` answers for all of them
(``MultiProcessCollector``; gauges sum over the live workers). Filled by ``MetricsSink`` (one call
per estimate, on the runtime's worker thread), by the runtime's batch observer, by the broker,
and once a second by ``Metrics.poll`` (streams, connections, errors by code).
"""

from __future__ import annotations

import os

from emostream.streamer.core.events import Estimate

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


class Metrics:
    """The metrics of one server process (names ``emostream_*``; see docs/deploy.md)."""

    def __init__(self, sample_rate_hz: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.sample_rate_hz = sample_rate_hz
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        r = self.registry = CollectorRegistry()
        self.streams = Gauge(
            "emostream_streams", "ingest streams open", registry=r, multiprocess_mode="livesum"
        )
        self.connections = Gauge(
            "emostream_connections", "WebSocket connections open", registry=r, multiprocess_mode="livesum"
        )
        self.estimates = Counter("emostream_estimates", "estimates published", registry=r)
        self.vad_gated = Counter(
            "emostream_vad_gated_windows", "windows the speech gate kept from the model", registry=r
        )
        self.latency = Histogram(
            "emostream_latency_seconds", "estimate latency (last sample in -> published)",
            registry=r, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.dropped_audio = Counter(
            "emostream_dropped_audio_seconds", "audio dropped (rate limit, ring overwrite)", registry=r
        )
        self.batch_size = Histogram(
            "emostream_batch_windows", "windows per model batch", registry=r, buckets=BATCH_BUCKETS
        )
        self.errors = Counter(
            "emostream_errors", "connections closed with an error, by code", ["code"], registry=r
        )
        self.broker_connected = Gauge(
            "emostream_broker_connected",
            "1 while the broker answers",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.publish_lag = Histogram(
            "emostream_broker_publish_lag_seconds", "estimate queued -> written to the broker",
            registry=r, buckets=LAG_BUCKETS_S,
        )  # fmt: skip
        self.broker_pending = Gauge(
            "emostream_broker_pending", "estimates waiting to be written to the broker",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.feed_gaps = Counter("emostream_feed_gap_estimates", "estimates the feed never got", registry=r)
        self.reset()

    def reset(self) -> None:
        """Forget the error counts seen (the Prometheus values themselves only grow)."""
        self._errors_seen: dict[str, int] = {}

    def poll(self, streams: int, connections: int, errors: dict[str, int], broker_pending: int = 0) -> None:
        """Once a second on the event loop: the gauges, and the error counts' growth since the last poll."""
        self.streams.set(streams)
        self.connections.set(connections)
        self.broker_pending.set(broker_pending)
        for code, n in list(errors.items()):
            grown = n - self._errors_seen.get(code, 0)
            if grown > 0:
                self.errors.labels(code).inc(grown)
                self._errors_seen[code] = n

    def observe_batch(self, n_windows: int) -> None:
        self.batch_size.observe(n_windows)

    def exposition(self) -> tuple[bytes, str]:
        """The text format for GET /metrics: this process, or every worker under ``--workers N``."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsSink:
    """A runtime sink (worker thread): counts estimates, their latency, gated windows and dropped audio."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.reset()

    def reset(self) -> None:
        self._dropped: dict[str, int] = {}  # stream -> dropped_samples last seen (cumulative per stream)

    def publish(self, event: Estimate) -> None:
        m = self.metrics
        m.estimates.inc()
        m.latency.observe(event.latency_ms / 1000.0)
        if not event.speech:
            m.vad_gated.inc()
        before = self._dropped.get(event.stream, 0)
        if event.seq == 0:
            before = 0  # a new stream under a known id
        if event.dropped_samples > before:
            m.dropped_audio.inc((event.dropped_samples - before) / m.sample_rate_hz)
        self._dropped[event.stream] = event.dropped_samples

    def retain(self, stream_ids: set[str]) -> None:
        """Forget the streams that ended (from the event loop; the worker thread only adds)."""
        for stream in list(self._dropped):
            if stream not in stream_ids:
                self._dropped.pop(stream, None)

    def close(self) -> None:
        pass
