"""The knowledge-base sync as a Celery task on the CPU (deliver) queue, scheduled by the worker's beat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from celery import Celery

from service.queue import DELIVER_QUEUE
from service.settings import Settings

if TYPE_CHECKING:
    from workers.app import WorkerRuntime

KB_SYNC_TASK = "itsm.kb_sync"

log = structlog.get_logger(__name__)


def kb_configured(settings: Settings) -> bool:
    """Whether any knowledge base is configured to sync."""
    return settings.kb.servicenow_enabled or bool(settings.kb.confluence_url or settings.kb.confluence_spaces)


def kb_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The beat entry for the sync (none when no source is configured or the interval is 0)."""
    interval = settings.kb.sync_interval_s
    if not interval or not kb_configured(settings):
        return {}
    # Expiry: a sync that could not start before the next one is due is simply dropped.
    return {"itsm-kb-sync": {"task": KB_SYNC_TASK, "schedule": float(interval),
                             "options": {"queue": DELIVER_QUEUE, "expires": float(interval)}}}  # fmt: skip


def register_kb_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the sync task on `app`."""

    @app.task(name=KB_SYNC_TASK, shared=False, acks_late=True)
    def kb_sync_task() -> list[dict[str, object]]:
        """Sync every configured knowledge base; a busy lease (a CLI sync running) makes it a no-op."""
        from service.knowledge.sync import sync_all

        try:
            reports = sync_all(runtime.engine(), runtime.settings)
        except ValueError as exc:  # a source is half-configured: say so instead of retrying forever
            log.error("kb_sync_misconfigured", error=str(exc))
            return []
        return [r.as_dict() for r in reports]
