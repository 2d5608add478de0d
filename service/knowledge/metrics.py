"""Knowledge-base sync health for /metrics, read from kb_sync_state at scrape time (survives restarts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from service.domain.knowledge import KbSyncState

log = structlog.get_logger(__name__)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class KnowledgeCollector(Collector):
    """itsm_kb_* gauges and counters per source; a database error yields nothing rather than failing the scrape."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._engine = engine
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Sync lag, articles held, and the sync outcome counters of every source that has synced."""
        lag = GaugeMetricFamily(
            "itsm_kb_sync_lag_seconds",
            "Seconds since the source's last sync that read everything (never synced: since its first attempt)",
            labels=["source"],
        )
        articles = GaugeMetricFamily("itsm_kb_articles", "Published articles held per source", labels=["source"])
        failing = GaugeMetricFamily(
            "itsm_kb_sync_failing", "1 when the source's latest sync reported an error", labels=["source"]
        )
        errors = CounterMetricFamily("itsm_kb_sync_errors", "Syncs that reported an error", labels=["source"])
        changes = CounterMetricFamily(
            "itsm_kb_article_changes", "Articles added, updated and removed by syncs", labels=["source", "change"]
        )
        try:
            with Session(self._engine) as session:
                states = session.exec(select(KbSyncState)).all()
        except SQLAlchemyError as exc:  # the database's own gauges report the outage
            log.warning("kb_metrics_unavailable", error=type(exc).__name__)
            return
        now = self._clock()
        for s in states:
            since = s.last_success_at or s.last_started_at
            if since is not None:
                lag.add_metric([s.source], max(0.0, (now - _aware(since)).total_seconds()))
            articles.add_metric([s.source], s.articles)
            latest_failed = s.last_error_at is not None and (
                s.last_success_at is None or _aware(s.last_error_at) >= _aware(s.last_success_at)
            )
            failing.add_metric([s.source], 1.0 if latest_failed else 0.0)
            errors.add_metric([s.source], s.errors_total)
            for change, n in (("added", s.added_total), ("updated", s.updated_total), ("removed", s.removed_total)):
                changes.add_metric([s.source, change], n)
        yield from (lag, articles, failing, errors, changes)
