"""The triage flow as plain functions (no Celery): claim -> ticket -> model -> store -> policy -> outbox."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.policy import Decision, decide_fields
from service.domain.ports import Triager
from service.domain.schemas import CanonicalTicket, TriageResult
from service.domain.tables import (
    DeliveryKind,
    EventStatus,
    InboundEvent,
    Suggestion,
    Ticket,
    Triage,
    utcnow,
)
from service.outbox import add_delivery, triage_delivery_key
from service.queue import DELIVER_TASK, TRIAGE_EVENT_TASK
from service.settings import Settings
from workers.batching import claim_batch
from workers.metrics import metrics
from workers.note import build_note

log = structlog.get_logger(__name__)

Enqueue = Callable[[str, int, float | None], None]  # (task name, row id, countdown seconds)
# Flags (from scrubbing or the model) after which nothing is auto-applied: the text tried to steer us.
DISTRUST_FLAG_PARTS = ("injection", "override", "smuggl")


@dataclass
class PipelineContext:
    """What the flow needs, built once per process by the worker (or by a test)."""

    engine: Engine
    settings: Settings
    triager: Callable[[], Triager]  # lazy: the model loads in the process that runs it
    enqueue: Enqueue


@dataclass
class TriageReport:
    """What one triage task did (for logs and tests)."""

    claimed: list[int] = field(default_factory=list)
    triaged: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)


def scrub_text(text: str) -> tuple[str, list[str]]:
    """Redact secrets/PII and strip Unicode tricks before the model or the database sees the text."""
    # SANITIZE_CALL_SITE: service.domain.sanitize.scrub is owned by the reliability helper; until it lands
    # the text passes through unchanged (the connectors still render model output inertly).
    try:
        sanitize: Any = importlib.import_module("service.domain.sanitize")
    except ModuleNotFoundError:
        return text, []
    scrubbed = sanitize.scrub(text)
    return str(scrubbed.text), [str(f) for f in scrubbed.flags]


def triage_event(ctx: PipelineContext, event_id: int, *, redelivered: bool = False) -> TriageReport:
    """Handle one triage message: claim a batch around its event and run it, or return if already claimed."""
    batch = claim_batch(ctx.engine, ctx.settings, event_id, redelivered=redelivered)
    report = TriageReport(claimed=list(batch.event_ids), dead=list(batch.dead))
    for eid in batch.dead:
        metrics().dead_letters.labels(kind="event", reason="max_attempts").inc()
        log.warning("event_dead_lettered", event_id=eid)
    for eid in batch.released:
        ctx.enqueue(TRIAGE_EVENT_TASK, eid, None)
    if batch.event_ids:
        run_batch(ctx, batch.event_ids, report)
    return report


def run_batch(ctx: PipelineContext, event_ids: list[int], report: TriageReport) -> None:
    """Run claimed events through the model as one batch and store each result with its outbox row."""
    with Session(ctx.engine) as session:
        events = list(session.exec(select(InboundEvent).where(col(InboundEvent.id).in_(event_ids))))
        tickets = {
            t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_({e.ticket_id for e in events})))
        }
        done = set(
            session.exec(
                select(Triage.ticket_id, Triage.source_version).where(col(Triage.ticket_id).in_(list(tickets)))
            )
        )
    now = utcnow()
    work: list[tuple[InboundEvent, Ticket]] = []
    seen: set[tuple[int, int]] = set()
    for ev in events:
        metrics().queue_wait.observe(max(0.0, (now - ev.received_at).total_seconds()))
        ticket = tickets.get(ev.ticket_id) if ev.ticket_id is not None else None
        if ticket is None or ticket.id is None:
            _finish(ctx.engine, ev.id, EventStatus.ignored, reason="no ticket")
            continue
        key = (ticket.id, ticket.source_version)
        if key in done or key in seen:  # this ticket version is already triaged (redelivery, sweeper, peer)
            _finish(ctx.engine, ev.id, EventStatus.triaged, reason="ticket version already triaged")
            report.duplicates.append(_id(ev))
            continue
        seen.add(key)
        work.append((ev, ticket))
    if not work:
        return
    inputs, input_flags = _model_inputs([t for _, t in work])
    started = time.perf_counter()
    try:
        results = ctx.triager().triage(inputs)
        if len(results) != len(inputs):
            raise RuntimeError(f"model returned {len(results)} results for {len(inputs)} tickets")
    except Exception as exc:  # noqa: BLE001  any model failure: retry later, never lose the events
        _fail(ctx, [ev for ev, _ in work], exc, report)
        return
    elapsed = time.perf_counter() - started
    metrics().model_latency.observe(elapsed)
    metrics().batch_size.observe(len(inputs))
    log.info("batch_triaged", size=len(inputs), model_s=round(elapsed, 3))
    for (ev, ticket), result, flags in zip(work, results, input_flags, strict=True):
        delivery_id = store_result(ctx, ev, ticket, result, flags, batch_s=elapsed, batch_size=len(inputs))
        report.triaged.append(_id(ev))
        if delivery_id is not None:
            report.deliveries.append(delivery_id)
            ctx.enqueue(DELIVER_TASK, delivery_id, None)


def _model_inputs(tickets: list[Ticket]) -> tuple[list[CanonicalTicket], list[list[str]]]:
    """Scrubbed canonical tickets for the model, with the flags scrubbing raised per ticket."""
    inputs: list[CanonicalTicket] = []
    flags: list[list[str]] = []
    for t in tickets:
        subject, f1 = scrub_text(t.subject)
        body, f2 = scrub_text(t.body)
        inputs.append(
            CanonicalTicket(
                source=t.source,
                external_id=t.external_id,
                external_key=t.external_key,
                subject=subject,
                body=body,
                body_truncated=t.body_truncated,
                source_version=t.source_version,
            )
        )
        flags.append(sorted(set(f1 + f2 + (["body_truncated"] if t.body_truncated else []))))
    return inputs, flags


def store_result(
    ctx: PipelineContext,
    ev: InboundEvent,
    ticket: Ticket,
    result: TriageResult,
    input_flags: list[str],
    *,
    batch_s: float,
    batch_size: int,
) -> int | None:
    """One transaction per ticket: Triage, pending Suggestion, decisions, triage Delivery, event done."""
    draft, draft_flags = scrub_text(result.draft_reply) if result.draft_reply else (None, [])
    flags = sorted(set(input_flags + result.flags + draft_flags))
    allow_auto = not any(p in f.lower() for f in flags for p in DISTRUST_FLAG_PARTS)
    decisions = decide_fields(result.predictions, ctx.settings.policy, allow_auto=allow_auto)
    timings = dict(result.timings) | {"batch_s": batch_s, "batch_size": float(batch_size)}
    with session_scope(ctx.engine) as session:
        triage = Triage(
            ticket_id=_id(ticket),
            event_id=ev.id,
            source_version=ticket.source_version,
            predictions={k: v.model_dump() for k, v in result.predictions.items()},
            decisions={k: {"decision": d.decision.value, "reason": d.reason} for k, d in decisions.items()},
            draft_reply=draft,
            flags=flags,
            model_version=result.model_version[:300],
            adapter_version=(result.adapter_version or None),
            timings=timings,
        )
        try:
            with session.begin_nested():
                session.add(triage)
                session.flush()
        except IntegrityError:
            # Another worker stored this ticket version first (lease takeover): its outbox row is the one.
            _mark(session, _id(ev), EventStatus.triaged, reason="ticket version already triaged")
            return None
        suggestion_id: int | None = None
        if draft:
            suggestion = Suggestion(triage_id=_id(triage), ticket_id=_id(ticket), draft=draft)
            session.add(suggestion)
            session.flush()
            suggestion_id = suggestion.id
        note = build_note(
            decisions,
            suggestion_id=suggestion_id,
            flags=flags,
            model_version=triage.model_version,
            adapter_version=triage.adapter_version,
        )
        fields = {k: d.label for k, d in decisions.items() if d.decision == Decision.auto}
        delivery = add_delivery(
            session,
            ticket_id=_id(ticket),
            kind=DeliveryKind.triage,
            payload={"fields": fields, "note": note, "triage_id": triage.id},
            idempotency_key=triage_delivery_key(_id(triage)),
        )
        _mark(session, _id(ev), EventStatus.triaged)
    m = metrics()
    m.tickets_triaged.labels(source=ticket.source).inc()
    for d in decisions.values():
        m.field_decisions.labels(field=d.field, decision=d.decision.value).inc()
    log.info("triage_completed", event_id=ev.id, ticket_id=ticket.id, triage_id=triage.id, delivery_id=delivery.id)
    return delivery.id


def _fail(ctx: PipelineContext, events: list[InboundEvent], exc: Exception, report: TriageReport) -> None:
    """Mark a failed batch's events failed (retried alone, with backoff) or dead after max_attempts."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("batch_failed", size=len(events), error=error)
    for ev in events:
        attempts = max(ev.attempts, 1)  # rows were loaded after the claim counted this attempt
        if attempts >= ctx.settings.worker.max_attempts:
            _finish(ctx.engine, ev.id, EventStatus.dead, error=error)
            metrics().dead_letters.labels(kind="event", reason="model_error").inc()
            report.dead.append(_id(ev))
        else:
            _finish(ctx.engine, ev.id, EventStatus.failed, error=error)
            report.failed.append(_id(ev))
            ctx.enqueue(TRIAGE_EVENT_TASK, _id(ev), float(2**attempts))


def _mark(
    session: Session,
    event_id: int,
    status: EventStatus,
    *,
    reason: str | None = None,
    error: str | None = None,
) -> None:
    """Move an event out of processing (conditional, so a takeover's terminal status is never overwritten)."""
    values: dict[str, Any] = {"status": status, "lease_until": None, "updated_at": utcnow()}
    if reason is not None:
        values["ignored_reason"] = reason[:200]
    if error is not None:
        values["last_error"] = error
    session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.id) == event_id, col(InboundEvent.status) == EventStatus.processing)
        .values(**values)
    )


def _finish(
    engine: Engine,
    event_id: int | None,
    status: EventStatus,
    *,
    reason: str | None = None,
    error: str | None = None,
) -> None:
    """_mark in its own transaction."""
    with session_scope(engine) as session:
        _mark(session, _id_of(event_id), status, reason=reason, error=error)


def _id(row: Any) -> int:
    """The primary key of a flushed row (typed as int for mypy)."""
    return _id_of(row.id)


def _id_of(value: int | None) -> int:
    if value is None:
        raise ValueError("row has no id yet")
    return value
