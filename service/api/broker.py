"""Publishing triage tasks from the API, with a short circuit-breaker so a broker outage never slows acks."""

from __future__ import annotations

import threading
import time

import structlog
from celery import Celery

from service.api.metrics import ApiMetrics
from service.queue import TRIAGE_EVENT_TASK, enqueue

log = structlog.get_logger(__name__)


class BrokerGate:
    """Publishes by task name; after a failure it skips the broker for `cooldown_s` (events stay `received`)."""

    def __init__(self, app: Celery, metrics: ApiMetrics, *, cooldown_s: float = 5.0) -> None:
        self._app = app
        self._metrics = metrics
        self._cooldown_s = cooldown_s
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while the breaker is open after a failed publish."""
        return time.monotonic() >= self._open_until

    def publish_triage(self, event_id: int) -> str | None:
        """Enqueue the triage task; returns None on success or the reason it was not published."""
        if not self.healthy:
            return f"broker unavailable (last error: {self.last_error})"
        try:
            enqueue(self._app, TRIAGE_EVENT_TASK, event_id)
        except Exception as exc:  # noqa: BLE001  (kombu raises many types: OperationalError, OSError, ...)
            with self._lock:
                self._open_until = time.monotonic() + self._cooldown_s
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._metrics.broker_up.set(0)
            self._metrics.enqueue_failures.inc()
            log.warning("enqueue_failed", event_id=event_id, error=self.last_error)
            return self.last_error
        self._metrics.broker_up.set(1)
        return None
