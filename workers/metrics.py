"""Prometheus metrics of the workers (itsm_*), aggregated across prefork children in multiprocess mode."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.domain.tables import Delivery, InboundEvent, Triage
from service.knowledge.metrics import KnowledgeCollector

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class WorkerMetrics:
    """The worker's counters and histograms (one set per process)."""

    tickets_triaged: Counter
    queue_wait: Histogram
    model_latency: Histogram
    batch_size: Histogram
    field_decisions: Counter
    deliveries: Counter
    dead_letters: Counter
    drafts: Counter
    draft_latency: Histogram
    draft_batch_latency: Histogram


@cache
def metrics() -> WorkerMetrics:
    """Create the metrics on first use, i.e. in the process that records them (after fork in a pool child)."""
    return WorkerMetrics(
        tickets_triaged=Counter("itsm_tickets_triaged", "Tickets triaged by the model", ["source"]),
        queue_wait=Histogram(
            "itsm_queue_wait_seconds",
            "Webhook received -> claimed by a triage batch",
            buckets=_LATENCY_BUCKETS,
        ),
        model_latency=Histogram("itsm_model_latency_seconds", "Model time for one batch", buckets=_LATENCY_BUCKETS),
        batch_size=Histogram("itsm_triage_batch_size", "Tickets per model batch", buckets=_BATCH_BUCKETS),
        field_decisions=Counter("itsm_field_decisions", "Policy decisions per predicted field", ["field", "decision"]),
        deliveries=Counter("itsm_deliveries", "Delivery attempts by outcome", ["kind", "outcome"]),
        dead_letters=Counter("itsm_dead_letters", "Work given up on (dead-lettered)", ["kind", "reason"]),
        drafts=Counter("itsm_drafts", "Reply suggestions stored, by source (model, history, none)", ["source"]),
        draft_latency=Histogram(
            "itsm_draft_latency_seconds", "Labels stored -> reply suggestion stored", buckets=_LATENCY_BUCKETS
        ),
        draft_batch_latency=Histogram(
            "itsm_draft_batch_seconds", "Model time for one drafting batch", buckets=_LATENCY_BUCKETS
        ),
    )


def enable_multiprocess(directory: Path) -> None:
    """Switch prometheus_client to per-process files so the parent can serve what pool children record."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # The value class is chosen when prometheus_client is imported; re-pick it now the variable is set.
    values.ValueClass = values.get_value_class()
    metrics.cache_clear()


class BacklogCollector(Collector):
    """Rows per status read from the database at scrape time: backlog and dead letters survive restarts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge per table, labelled by status."""
        events = GaugeMetricFamily("itsm_inbound_events", "Inbound events by status", labels=["status"])
        deliveries = GaugeMetricFamily(
            "itsm_outbox_deliveries", "Outbox rows by kind and status", labels=["kind", "status"]
        )
        drafts = GaugeMetricFamily("itsm_triage_drafts", "Triages by draft status", labels=["status"])
        with Session(self._engine) as session:
            for status, n in session.exec(select(InboundEvent.status, func.count()).group_by(InboundEvent.status)):
                events.add_metric([status], n)
            rows = session.exec(
                select(Delivery.kind, Delivery.status, func.count()).group_by(Delivery.kind, Delivery.status)
            )
            for kind, status, n in rows:
                deliveries.add_metric([kind, status], n)
            for status, n in session.exec(select(Triage.draft_status, func.count()).group_by(Triage.draft_status)):
                drafts.add_metric([status], n)
        yield events
        yield deliveries
        yield drafts


def serve_metrics(port: int, engine: Engine) -> CollectorRegistry:
    """Expose /metrics on `port`: every child's samples (multiprocess) plus the database backlog."""
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        MultiProcessCollector(registry)
    registry.register(BacklogCollector(engine))
    registry.register(KnowledgeCollector(engine))
    start_http_server(port, addr="0.0.0.0", registry=registry)
    return registry
