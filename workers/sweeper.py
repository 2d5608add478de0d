"""The sweeper: re-enqueues work the broker lost or a dead worker left; dead-letters after max attempts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from service.db import session_scope
from service.domain.tables import (
    Delivery,
    DeliveryStatus,
    DraftStatus,
    EventStatus,
    InboundEvent,
    Suggestion,
    SuggestionStatus,
    Triage,
    utcnow,
)
from service.queue import DELIVER_TASK, DRAFT_TASK, TRIAGE_EVENT_TASK
from service.settings import Settings
from workers.metrics import metrics

log = structlog.get_logger(__name__)

SWEEP_LIMIT = 500  # rows per table per sweep: a huge backlog is drained over several sweeps, not one long lock
Enqueue = Callable[[str, int, float | None], None]


@dataclass
class SweepReport:
    """What one sweep did."""

    events_requeued: list[int] = field(default_factory=list)
    events_dead: list[int] = field(default_factory=list)
    deliveries_requeued: list[int] = field(default_factory=list)
    deliveries_dead: list[int] = field(default_factory=list)
    drafts_requeued: list[int] = field(default_factory=list)
    drafts_dead: list[int] = field(default_factory=list)


def sweep(engine: Engine, settings: Settings, enqueue: Enqueue, *, now: datetime | None = None) -> SweepReport:
    """One pass over events and deliveries; safe to run concurrently with workers and with itself."""
    now = now or utcnow()
    report = SweepReport()
    try:
        _sweep_events(engine, settings, enqueue, now, report)
        _sweep_deliveries(engine, settings, enqueue, now, report)
        _sweep_drafts(engine, settings, enqueue, now, report)
    finally:
        counts = {k: len(v) for k, v in vars(report).items()}
        if any(counts.values()):
            log.info("sweep_completed", **counts)
    return report


def sweep_once(settings: Settings) -> SweepReport:
    """One sweep with its own engine and producer (the `itsm-triage sweep` command; no worker needed)."""
    from service.db import make_engine
    from service.queue import declare_queues, enqueue, make_celery

    engine = make_engine(settings)
    app = make_celery(settings)
    declare_queues(app)
    try:
        return sweep(engine, settings, lambda task, row_id, countdown: enqueue(app, task, row_id, countdown=countdown))
    finally:
        engine.dispose()
        app.close()


def _sweep_events(engine: Engine, settings: Settings, enqueue: Enqueue, now: datetime, report: SweepReport) -> None:
    """Waiting too long (lost message), failed (retry), or processing past the lease (dead worker)."""
    grace = now - timedelta(seconds=settings.worker.stuck_grace_s)
    stuck = or_(
        and_(
            col(InboundEvent.status).in_((EventStatus.received, EventStatus.queued, EventStatus.failed)),
            col(InboundEvent.updated_at) < grace,
        ),
        and_(col(InboundEvent.status) == EventStatus.processing, col(InboundEvent.lease_until) < now),
    )
    with session_scope(engine) as session:
        rows = list(
            session.exec(
                select(InboundEvent.id, InboundEvent.status, InboundEvent.attempts, InboundEvent.updated_at)
                .where(stuck)
                .order_by(col(InboundEvent.id))
                .limit(SWEEP_LIMIT)
            )
        )
    for row_id, status, attempts, updated_at in rows:
        event_id = int(row_id or 0)
        give_up = status in (EventStatus.processing, EventStatus.failed) and attempts >= settings.worker.max_attempts
        values = (
            {
                "status": EventStatus.dead,
                "lease_until": None,
                "updated_at": now,
                "last_error": f"gave up after {attempts} attempts (sweeper)",
            }
            if give_up
            else {"status": EventStatus.queued, "lease_until": None, "updated_at": now}
        )
        with session_scope(engine) as session:
            # Conditional on what we read: a worker that claimed or finished the row meanwhile wins.
            res = session.execute(
                update(InboundEvent)
                .where(
                    col(InboundEvent.id) == event_id,
                    col(InboundEvent.status) == status,
                    col(InboundEvent.updated_at) == updated_at,
                )
                .values(**values)
            )
            if not getattr(res, "rowcount", 0):
                continue
            if not give_up:
                # Publish inside the transaction: if the broker is down the row keeps its old status and age.
                enqueue(TRIAGE_EVENT_TASK, event_id, None)
        if give_up:
            report.events_dead.append(event_id)
            metrics().dead_letters.labels(kind="event", reason="max_attempts").inc()
        else:
            report.events_requeued.append(event_id)


def _sweep_deliveries(engine: Engine, settings: Settings, enqueue: Enqueue, now: datetime, report: SweepReport) -> None:
    """Due retries whose message is gone, and in-flight rows past their lease (unknown: look first)."""
    grace = now - timedelta(seconds=settings.worker.stuck_grace_s)
    due = and_(
        col(Delivery.status).in_((DeliveryStatus.pending, DeliveryStatus.failed, DeliveryStatus.unknown)),
        or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= now),
        col(Delivery.updated_at) < grace,
    )
    expired = and_(col(Delivery.status) == DeliveryStatus.in_flight, col(Delivery.lease_until) < now)
    with session_scope(engine) as session:
        rows = list(
            session.execute(
                sa_select(
                    col(Delivery.id),
                    col(Delivery.status),
                    col(Delivery.attempts),
                    col(Delivery.updated_at),
                    col(Delivery.payload),
                )
                .where(or_(due, expired))
                .order_by(col(Delivery.id))
                .limit(SWEEP_LIMIT)
            )
        )
    for row_id, status, attempts, updated_at, payload in rows:
        delivery_id = int(row_id or 0)
        values: dict[str, Any]
        give_up = attempts > settings.worker.delivery_max_retries
        if status == DeliveryStatus.in_flight:
            # The worker died mid-call: the write may have happened, so the next attempt must look first.
            values = {
                "status": DeliveryStatus.unknown,
                "lease_until": None,
                "next_attempt_at": now,
                "updated_at": now,
            }
        else:
            values = {"updated_at": now}
        if give_up:
            values = {
                "status": DeliveryStatus.dead,
                "lease_until": None,
                "updated_at": now,
                "last_error": f"gave up after {attempts} attempts (sweeper)",
            }
        with session_scope(engine) as session:
            res = session.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery_id,
                    col(Delivery.status) == status,
                    col(Delivery.updated_at) == updated_at,
                )
                .values(**values)
            )
            if not getattr(res, "rowcount", 0):
                continue
            if not give_up:
                enqueue(DELIVER_TASK, delivery_id, None)
            elif (payload or {}).get("suggestion_id") is not None:
                # The approved reply will never be posted: the review UI shows it as failed.
                session.execute(
                    update(Suggestion)
                    .where(
                        col(Suggestion.id) == int(payload["suggestion_id"]),
                        col(Suggestion.status) == SuggestionStatus.approved,
                    )
                    .values(status=SuggestionStatus.failed, version=col(Suggestion.version) + 1)
                )
        if give_up:
            report.deliveries_dead.append(delivery_id)
            metrics().dead_letters.labels(kind="delivery", reason="max_attempts").inc()
        else:
            report.deliveries_requeued.append(delivery_id)


def _sweep_drafts(engine: Engine, settings: Settings, enqueue: Enqueue, now: datetime, report: SweepReport) -> None:
    """Pending drafts whose message is gone (older than the grace, past any retry backoff) and drafting claims past
    their lease (dead worker): back to pending and re-enqueued, or failed after max_attempts."""
    grace = now - timedelta(seconds=settings.worker.stuck_grace_s)
    due = or_(col(Triage.draft_lease_until).is_(None), col(Triage.draft_lease_until) <= now)
    stuck = or_(
        and_(col(Triage.draft_status) == DraftStatus.pending, col(Triage.created_at) < grace, due),
        and_(col(Triage.draft_status) == DraftStatus.drafting, col(Triage.draft_lease_until) < now),
    )
    with session_scope(engine) as session:
        rows = list(
            session.exec(
                select(Triage.id, Triage.draft_status, Triage.draft_attempts, Triage.draft_lease_until)
                .where(stuck)
                .order_by(col(Triage.id))
                .limit(SWEEP_LIMIT)
            )
        )
    for row_id, status, attempts, until in rows:
        triage_id = int(row_id or 0)
        give_up = status == DraftStatus.drafting and attempts >= settings.worker.max_attempts
        values: dict[str, Any] = (
            {"draft_status": DraftStatus.failed, "draft_lease_until": None, "draft_error": "worker lost (sweeper)"}
            if give_up
            # not before the next sweep: a slow worker that still claims it wins; a lost message is resent once
            else {
                "draft_status": DraftStatus.pending,
                "draft_lease_until": now + timedelta(seconds=settings.worker.stuck_grace_s),
            }
        )
        with session_scope(engine) as session:
            res = session.execute(
                update(Triage)
                .where(
                    col(Triage.id) == triage_id,
                    col(Triage.draft_status) == status,
                    col(Triage.draft_attempts) == attempts,
                    col(Triage.draft_lease_until).is_(None)
                    if until is None
                    else col(Triage.draft_lease_until) == until,
                )
                .values(**values)
            )
            if not getattr(res, "rowcount", 0):
                continue
            if not give_up:
                enqueue(DRAFT_TASK, triage_id, None)
        if give_up:
            report.drafts_dead.append(triage_id)
            metrics().dead_letters.labels(kind="draft", reason="max_attempts").inc()
        else:
            report.drafts_requeued.append(triage_id)
