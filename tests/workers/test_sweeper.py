"""The sweeper: lost messages, dead workers and exhausted attempts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.db import session_scope
from service.domain.tables import Delivery, DeliveryStatus, EventStatus, InboundEvent, utcnow
from service.queue import DELIVER_TASK, TRIAGE_EVENT_TASK
from service.settings import Settings
from tests.workers.conftest import Recorder, seed_event, triage_and_draft
from workers.drafts import DraftContext
from workers.pipeline import PipelineContext, triage_event
from workers.sweeper import sweep


def _set(engine: Engine, model: type, row_id: int, **values: object) -> None:
    with session_scope(engine) as s:
        row = s.get(model, row_id)
        assert row is not None
        for k, v in values.items():
            setattr(row, k, v)
        s.add(row)


def _status(engine: Engine, model: type, row_id: int) -> str:
    with Session(engine) as s:
        row = s.get(model, row_id)
        assert row is not None
        return str(row.status)


def test_events_left_received_or_queued_past_the_grace_are_enqueued_once(
    engine: Engine, settings: Settings, recorder: Recorder
) -> None:
    old = utcnow() - timedelta(seconds=settings.worker.stuck_grace_s + 5)
    lost = seed_event(engine, status=EventStatus.received)  # broker was down at ingest
    _set(engine, InboundEvent, lost, updated_at=old)
    fresh = seed_event(engine, status=EventStatus.queued)
    report = sweep(engine, settings, recorder)
    assert report.events_requeued == [lost]
    assert recorder.ids(TRIAGE_EVENT_TASK) == [lost]
    assert _status(engine, InboundEvent, lost) == EventStatus.queued
    assert sweep(engine, settings, recorder).events_requeued == []  # touched: not re-sent every sweep
    assert fresh not in recorder.ids(TRIAGE_EVENT_TASK)


def test_processing_past_lease_is_requeued_then_dead_lettered_at_max_attempts(
    engine: Engine, settings: Settings, recorder: Recorder
) -> None:
    eid = seed_event(engine)
    expired = utcnow() - timedelta(seconds=1)
    _set(engine, InboundEvent, eid, status=EventStatus.processing, attempts=1, lease_until=expired)
    assert sweep(engine, settings, recorder).events_requeued == [eid]
    _set(
        engine,
        InboundEvent,
        eid,
        status=EventStatus.processing,
        attempts=settings.worker.max_attempts,
        lease_until=expired,
    )
    assert sweep(engine, settings, recorder).events_dead == [eid]
    assert _status(engine, InboundEvent, eid) == EventStatus.dead


def test_in_flight_delivery_past_lease_becomes_unknown_and_is_enqueued(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, recorder: Recorder
) -> None:
    did = triage_event(pipeline_ctx, seed_event(engine)).deliveries[0]
    recorder.sent.clear()
    _set(
        engine, Delivery, did, status=DeliveryStatus.in_flight, attempts=1, lease_until=utcnow() - timedelta(seconds=1)
    )
    assert sweep(engine, settings, recorder).deliveries_requeued == [did]
    assert _status(engine, Delivery, did) == DeliveryStatus.unknown  # the next attempt looks before writing
    assert recorder.ids(DELIVER_TASK) == [did]


def test_due_deliveries_whose_message_is_gone_are_enqueued_and_exhausted_ones_dead(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, recorder: Recorder
) -> None:
    old = utcnow() - timedelta(seconds=settings.worker.stuck_grace_s + 5)
    due = triage_event(pipeline_ctx, seed_event(engine)).deliveries[0]
    spent = triage_event(pipeline_ctx, seed_event(engine)).deliveries[0]
    later = triage_event(pipeline_ctx, seed_event(engine)).deliveries[0]
    recorder.sent.clear()
    _set(engine, Delivery, due, status=DeliveryStatus.failed, attempts=1, next_attempt_at=old, updated_at=old)
    _set(
        engine,
        Delivery,
        spent,
        status=DeliveryStatus.failed,
        attempts=settings.worker.delivery_max_retries + 1,
        next_attempt_at=old,
        updated_at=old,
    )
    _set(
        engine,
        Delivery,
        later,
        status=DeliveryStatus.failed,
        attempts=1,
        next_attempt_at=utcnow() + timedelta(hours=1),
        updated_at=old,
    )
    report = sweep(engine, settings, recorder)
    assert report.deliveries_requeued == [due]
    assert report.deliveries_dead == [spent]
    assert recorder.ids(DELIVER_TASK) == [due]
    assert _status(engine, Delivery, later) == DeliveryStatus.failed


def test_sweep_once_publishes_to_the_configured_broker(engine: Engine, settings: Settings) -> None:
    """The `itsm-triage sweep` entry point: its own engine and producer, no worker running."""
    from workers.sweeper import sweep_once

    eid = seed_event(engine, status=EventStatus.received)
    _set(engine, InboundEvent, eid, updated_at=utcnow() - timedelta(seconds=settings.worker.stuck_grace_s + 5))
    assert sweep_once(settings).events_requeued == [eid]
    assert _status(engine, InboundEvent, eid) == EventStatus.queued


def test_a_dead_lettered_reply_marks_its_approved_suggestion_failed(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, recorder: Recorder
) -> None:
    from service.domain.tables import DeliveryKind, Suggestion, SuggestionStatus
    from service.outbox import add_delivery, reply_delivery_key

    triage_and_draft(pipeline_ctx, draft_ctx, seed_event(engine))
    old = utcnow() - timedelta(seconds=settings.worker.stuck_grace_s + 5)
    with session_scope(engine) as s:
        sug = s.exec(select(Suggestion)).one()
        sug.status = SuggestionStatus.approved
        s.add(sug)
        assert sug.id is not None
        row = add_delivery(
            s,
            ticket_id=sug.ticket_id,
            kind=DeliveryKind.reply,
            payload={"public_reply": "hi", "suggestion_id": sug.id},
            idempotency_key=reply_delivery_key(sug.id),
        )
        row.status, row.attempts = DeliveryStatus.failed, settings.worker.delivery_max_retries + 1
        row.next_attempt_at = row.updated_at = old
        s.add(row)
        did = row.id
    assert sweep(engine, settings, recorder).deliveries_dead == [did]
    with Session(engine) as s:
        assert s.exec(select(Suggestion)).one().status == SuggestionStatus.failed
