"""The delivery state machine: sent, retry after backoff (never before Retry-After), unknown, dead."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.db import session_scope
from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream
from service.domain.tables import Delivery, DeliveryKind, DeliveryStatus, Suggestion, SuggestionStatus, utcnow
from service.outbox import add_delivery, reply_delivery_key
from service.queue import DELIVER_TASK
from service.settings import Settings
from tests.workers.conftest import Recorder, ScriptedWriter, seed_event, triage_and_draft
from workers.delivery import DeliveryContext, backoff_s, deliver
from workers.drafts import DraftContext
from workers.fake_triager import FakeTriager
from workers.pipeline import PipelineContext, triage_event


def _triaged_delivery(engine: Engine, pipeline_ctx: PipelineContext) -> int:
    report = triage_event(pipeline_ctx, seed_event(engine))
    return report.deliveries[0]


def _row(engine: Engine, delivery_id: int) -> Delivery:
    with Session(engine) as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None
        return row


def _make_due(engine: Engine, delivery_id: int) -> None:
    with session_scope(engine) as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None
        row.next_attempt_at = utcnow()
        s.add(row)


def test_success_marks_sent_and_builds_the_write_from_the_outbox_row(
    engine: Engine, pipeline_ctx: PipelineContext, delivery_ctx: DeliveryContext, writer: ScriptedWriter
) -> None:
    did = _triaged_delivery(engine, pipeline_ctx)
    assert deliver(delivery_ctx, did) == "sent"
    (call,) = writer.calls
    row = _row(engine, did)
    assert row.status == DeliveryStatus.sent and row.attempts == 1 and row.external_ref == "ref-1"
    assert call.kind == "triage" and call.idempotency_key == row.idempotency_key
    assert call.note == row.payload["note"] and call.check_existing is False
    assert deliver(delivery_ctx, did) == "done"  # a duplicate message writes nothing
    assert len(writer.calls) == 1


def test_429_waits_at_least_retry_after_then_looks_before_writing(
    engine: Engine,
    settings: Settings,
    pipeline_ctx: PipelineContext,
    delivery_ctx: DeliveryContext,
    writer: ScriptedWriter,
    recorder: Recorder,
) -> None:
    settings.worker.delivery_backoff_base_s = 0.01
    did = _triaged_delivery(engine, pipeline_ctx)
    writer.script = [TransientUpstream("429", status=429, retry_after_s=7)]
    before = utcnow()
    assert deliver(delivery_ctx, did) == "retry"
    row = _row(engine, did)
    assert row.status == DeliveryStatus.failed and row.next_attempt_at is not None
    assert (row.next_attempt_at - before).total_seconds() >= 7
    task, rid, countdown = recorder.sent[-1]
    assert (task, rid) == (DELIVER_TASK, did) and countdown is not None and countdown >= 7
    assert deliver(delivery_ctx, did) == "not_due"  # an early message must not write
    _make_due(engine, did)
    assert deliver(delivery_ctx, did) == "sent"
    assert [c.check_existing for c in writer.calls] == [False, True]


def test_outcome_unknown_retries_with_check_existing(
    engine: Engine, pipeline_ctx: PipelineContext, delivery_ctx: DeliveryContext, writer: ScriptedWriter
) -> None:
    did = _triaged_delivery(engine, pipeline_ctx)
    writer.script = [OutcomeUnknown("read timeout after sending")]
    assert deliver(delivery_ctx, did) == "unknown"
    assert _row(engine, did).status == DeliveryStatus.unknown
    _make_due(engine, did)
    assert deliver(delivery_ctx, did) == "sent"
    assert writer.calls[-1].check_existing is True


def test_permanent_error_dead_letters_with_the_reason(
    engine: Engine, pipeline_ctx: PipelineContext, delivery_ctx: DeliveryContext, writer: ScriptedWriter
) -> None:
    did = _triaged_delivery(engine, pipeline_ctx)
    writer.script = [PermanentUpstream("400 Field 'components' cannot be set", status=400)]
    assert deliver(delivery_ctx, did) == "dead"
    row = _row(engine, did)
    assert row.status == DeliveryStatus.dead and "components" in (row.last_error or "")
    assert deliver(delivery_ctx, did) == "done"


def test_transient_errors_dead_letter_after_max_retries(
    engine: Engine,
    settings: Settings,
    pipeline_ctx: PipelineContext,
    delivery_ctx: DeliveryContext,
    writer: ScriptedWriter,
    fake_llm: FakeTriager,
) -> None:
    settings.worker.delivery_max_retries = 2
    settings.worker.delivery_backoff_base_s = 0.0
    did = _triaged_delivery(engine, pipeline_ctx)
    writer.script = [TransientUpstream("500", status=500) for _ in range(5)]
    outcomes = []
    for _ in range(5):
        _make_due(engine, did)
        outcomes.append(deliver(delivery_ctx, did))
    assert outcomes == ["retry", "retry", "dead", "done", "done"]
    assert len(writer.calls) == 3
    assert "retries exhausted" in (_row(engine, did).last_error or "")
    assert fake_llm.batches == [1]  # an ITSM failure retries the delivery only, never the model


def test_reply_delivery_marks_the_suggestion_delivered(
    engine: Engine,
    pipeline_ctx: PipelineContext,
    draft_ctx: DraftContext,
    delivery_ctx: DeliveryContext,
    writer: ScriptedWriter,
) -> None:
    triage_and_draft(pipeline_ctx, draft_ctx, seed_event(engine))
    with session_scope(engine) as s:
        sug = s.exec(select(Suggestion)).one()
        sug.status, sug.final_reply = SuggestionStatus.approved, "We reset your VPN profile."
        s.add(sug)
        assert sug.id is not None
        row = add_delivery(
            s,
            ticket_id=sug.ticket_id,
            kind=DeliveryKind.reply,
            payload={"public_reply": sug.final_reply, "suggestion_id": sug.id},
            idempotency_key=reply_delivery_key(sug.id),
        )
        did = row.id
    assert did is not None
    assert deliver(delivery_ctx, did) == "sent"
    assert writer.calls[-1].public_reply == "We reset your VPN profile." and writer.calls[-1].note is None
    with Session(engine) as s:
        assert s.exec(select(Suggestion)).one().status == SuggestionStatus.delivered


def test_backoff_grows_is_capped_and_never_undercuts_retry_after(settings: Settings) -> None:
    settings.worker.delivery_backoff_base_s = 2
    settings.worker.delivery_backoff_cap_s = 10
    assert 1 <= backoff_s(settings, 1, None) <= 2
    assert 4 <= backoff_s(settings, 3, None) <= 8
    assert 5 <= backoff_s(settings, 10, None) <= 10
    assert backoff_s(settings, 1, 30) == 30


def test_an_unconfigured_itsm_system_dead_letters_at_once_with_the_reason(
    engine: Engine, pipeline_ctx: PipelineContext, delivery_ctx: DeliveryContext
) -> None:
    import dataclasses

    def no_writer(source: str) -> ScriptedWriter:
        raise ValueError(f"{source} write-back needs ITSM_JIRA__BASE_URL")

    did = _triaged_delivery(engine, pipeline_ctx)
    unconfigured = dataclasses.replace(delivery_ctx, writer_for=no_writer)
    assert deliver(unconfigured, did) == "dead"
    row = _row(engine, did)
    assert row.status == DeliveryStatus.dead and "not configured" in (row.last_error or "")
