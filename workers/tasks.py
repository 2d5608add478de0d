"""Thin Celery tasks: ids in; the flow lives in pipeline/delivery/sweeper, resources in the runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from service.queue import DELIVER_TASK, DRAFT_TASK, SWEEP_TASK, TRIAGE_EVENT_TASK
from workers.delivery import deliver
from workers.drafts import draft_triage
from workers.pipeline import triage_event
from workers.sweeper import sweep

if TYPE_CHECKING:
    from workers.app import WorkerRuntime


def _redelivered(task: Task) -> bool:
    """True when the broker re-sent this message (its previous consumer died without acking it)."""
    info: dict[str, Any] = task.request.delivery_info or {}
    return bool(info.get("redelivered"))


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the four tasks on `app`; reliability options come from make_celery's configuration."""

    @app.task(name=TRIAGE_EVENT_TASK, shared=False, bind=True, acks_late=True, reject_on_worker_lost=True)
    def triage_event_task(self: Task, event_id: int) -> None:
        """Claim a batch around `event_id` and triage it (returns at once if another batch has it)."""
        triage_event(runtime.pipeline(), int(event_id), redelivered=_redelivered(self))

    limit = runtime.settings.worker.draft_time_limit_s

    @app.task(
        name=DRAFT_TASK,
        shared=False,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        time_limit=limit,
        soft_time_limit=limit - max(1, min(10, limit // 10)),
    )
    def draft_task(self: Task, triage_id: int) -> None:
        """Claim a batch of pending drafts around `triage_id` and draft them (returns at once if claimed)."""
        draft_triage(runtime.drafts(), int(triage_id), redelivered=_redelivered(self))

    @app.task(name=DELIVER_TASK, shared=False, bind=True, acks_late=True, reject_on_worker_lost=True)
    def deliver_task(self: Task, delivery_id: int) -> None:
        """Write one outbox row to the ITSM tool; retries are scheduled by the delivery module itself."""
        deliver(runtime.delivery(), int(delivery_id), redelivered=_redelivered(self))

    @app.task(name=SWEEP_TASK, shared=False, acks_late=True)
    def sweep_task() -> None:
        """Periodic: re-enqueue stuck work, dead-letter what exhausted its attempts."""
        sweep(runtime.engine(), runtime.settings, runtime.enqueue)
