"""Prometheus metrics of the HTTP edge, on a registry per app (so tests can build many apps).

With several API processes (`ITSM_API__PROCESSES`), `serve` sets PROMETHEUS_MULTIPROC_DIR: every process writes
its values there and /metrics adds them up, so a scrape sees the whole pod rather than one random process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this API runs as several processes."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass
class ApiMetrics:
    """Counters and histograms the webhook routes and health checks update."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    collectors: list[Collector] = field(default_factory=list)  # read at scrape time (database state)

    def __post_init__(self) -> None:
        self.webhooks = Counter(
            "itsm_webhooks_total",
            "Webhook deliveries by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "itsm_webhook_ack_seconds",
            "Time from request start to the webhook's answer",
            ["source"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        # Across processes a gauge shows the worst live process: one failing publisher or DB check shows as 0.
        self.broker_up = Gauge(
            "itsm_broker_up",
            "1 when the last publish to the broker succeeded",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.enqueue_failures = Counter(
            "itsm_enqueue_failures_total",
            "Publishes that failed (the relay retries after a cool-down; the sweeper is the backstop)",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "itsm_database_up",
            "1 when the last readiness check reached the database",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.broker_up.set(1)
        self.database_up.set(1)

    def add_collector(self, collector: Collector) -> None:
        """Serve a scrape-time collector too (in multiprocess mode it joins the aggregated registry)."""
        self.collectors.append(collector)
        self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text format for /metrics: this process's registry, or every API process's values when shared."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in self.collectors:
            registry.register(collector)
        return generate_latest(registry)
