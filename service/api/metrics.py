"""Prometheus metrics of the HTTP edge, on a registry per app (so tests can build many apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ApiMetrics:
    """Counters and histograms the webhook routes and health checks update."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

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
        self.broker_up = Gauge(
            "itsm_broker_up", "1 when the last publish to the broker succeeded", registry=self.registry
        )
        self.enqueue_failures = Counter(
            "itsm_enqueue_failures_total",
            "Publishes that failed (the sweeper enqueues those events later)",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "itsm_database_up", "1 when the last readiness check reached the database", registry=self.registry
        )
        self.broker_up.set(1)
        self.database_up.set(1)
