"""The learning loop's Celery tasks: scheduled retrains on the `learn` queue (a worker of their own: a retrain is
minutes of model work) and the periodic registry check (shadow comparison, rollback) on the CPU (deliver) queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from celery import Celery
from celery.schedules import crontab

from service.queue import ADAPTERS_CHECK_TASK, DELIVER_QUEUE, LEARN_QUEUE, RETRAIN_TASK
from service.settings import Settings

if TYPE_CHECKING:
    from workers.app import WorkerRuntime

log = structlog.get_logger(__name__)


def learning_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat entries: the registry check every `check_interval_s`, a retrain on the `schedule` crontab (UTC)."""
    cfg = settings.learning
    out: dict[str, dict[str, Any]] = {}
    if cfg.check_interval_s:
        interval = float(cfg.check_interval_s)
        out["itsm-adapters-check"] = {
            "task": ADAPTERS_CHECK_TASK,
            "schedule": interval,
            "options": {"queue": DELIVER_QUEUE, "expires": interval},
        }
    if cfg.schedule:
        minute, hour, day, month, weekday = cfg.schedule.split()
        try:
            when = crontab(minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday)
        except ValueError as exc:
            raise ValueError(f"ITSM_LEARNING__SCHEDULE {cfg.schedule!r} is not a valid crontab: {exc}") from None
        # a retrain that could not start within an hour waits for the next date rather than piling up
        options = {"queue": LEARN_QUEUE, "expires": 3600}
        out["itsm-retrain"] = {"task": RETRAIN_TASK, "schedule": when, "options": options}
    return out


def register_learning_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the retrain and check tasks on `app`."""
    limit = int(runtime.settings.learning.time_budget_min * 60 * 2 + 1800)

    # Acknowledged on receipt, not late: a retrain runs longer than Redis's visibility timeout (3600 s by default),
    # which would hand a late-acked message to another worker mid-run; a retrain lost to a crash simply waits for
    # the next scheduled date (or `itsm-triage retrain`).
    @app.task(name=RETRAIN_TASK, shared=False, acks_late=False, time_limit=limit, soft_time_limit=limit - 60)
    def retrain_task() -> dict[str, Any]:
        """One retrain (a no-op while another runs: the database lease)."""
        from models.adapter import resolve_adapter
        from service.learning.lease import Busy
        from service.learning.retrain import retrain
        from workers.model_backend import model_config

        settings = runtime.settings
        try:
            outcome = retrain(
                runtime.engine(),
                settings,
                model_config(settings),
                default_adapter=resolve_adapter(settings.model.adapter),
                actor="service:schedule",
                log_fn=lambda line: log.info("retrain_progress", line=str(line)[:500]),
            )
        except Busy as exc:
            log.info("retrain_busy", detail=str(exc))
            return {"skipped": str(exc)}
        return {
            "candidate": outcome.candidate.version if outcome.candidate else None,
            "passed": bool(outcome.verdict and outcome.verdict.passed),
            "message": outcome.message[:2000],
        }

    @app.task(name=ADAPTERS_CHECK_TASK, shared=False, acks_late=True)
    def adapters_check_task() -> list[str]:
        """The shadow comparison and the rollback check (cheap: database reads)."""
        from service.learning.checks import run_checks

        return run_checks(runtime.engine(), runtime.settings).lines()
