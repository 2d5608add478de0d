"""The retention purge as a Celery task on the CPU (deliver) queue, scheduled by the worker's beat (the sweeper)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from celery import Celery

from service.queue import DELIVER_QUEUE
from service.settings import Settings

if TYPE_CHECKING:
    from workers.app import WorkerRuntime

RETENTION_TASK = "itsm.retention"

log = structlog.get_logger(__name__)


def retention_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The beat entry for the retention purge (raw payloads and closed tickets' text)."""
    interval = float(settings.privacy.retention_interval_s)
    # Expiry: a purge that could not start before the next one is due is simply dropped.
    return {
        "itsm-retention": {
            "task": RETENTION_TASK,
            "schedule": interval,
            "options": {"queue": DELIVER_QUEUE, "expires": interval},
        }
    }


def register_retention_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the retention task on `app`."""

    @app.task(name=RETENTION_TASK, shared=False, acks_late=True)
    def retention_task() -> dict[str, int]:
        """Apply the retention settings once (idempotent: what is gone stays gone)."""
        from service.retention import purge_expired

        report = purge_expired(runtime.engine(), runtime.settings)
        return {"payloads": report.payloads, "tickets": report.tickets}
