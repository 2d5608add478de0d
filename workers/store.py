"""Storing a labelled batch: Triage (draft pending) + policy decisions + triage Delivery (the internal note),
event -> triaged. The reply suggestion is stored later by the draft stage (workers/drafts.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from service.db import session_scope
from service.domain.policy import Decision, decide_fields
from service.domain.sanitize import scrub
from service.domain.schemas import TriageResult
from service.domain.tables import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    DraftStatus,
    EventStatus,
    InboundEvent,
    Ticket,
    Triage,
    utcnow,
)
from service.outbox import triage_delivery_key
from service.settings import Settings
from workers.metrics import metrics
from workers.note import build_note

log = structlog.get_logger(__name__)

# Flags (from scrubbing or the model) after which nothing is auto-applied: the text tried to steer us.
DISTRUST_FLAG_PARTS = ("injection", "override", "smuggl")


@dataclass(frozen=True)
class Work:
    """One claimed event, its ticket, and the flags scrubbing its text raised."""

    event_id: int
    ticket: Ticket
    flags: list[str]


@dataclass
class Stored:
    """What storing a batch produced: outbox rows to deliver and triages waiting for a draft."""

    deliveries: list[int] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)


def scrub_text(text: str) -> tuple[str, list[str]]:
    """Redact secrets/PII and strip Unicode tricks before the model or the database sees the text."""
    scrubbed = scrub(text)
    return scrubbed.text, list(scrubbed.flags)


def store_batch(
    engine: Engine, settings: Settings, work: list[Work], results: list[TriageResult], *, batch_s: float
) -> Stored:
    """One transaction for the whole batch (one commit, not one per ticket); the new delivery and draft ids."""
    try:
        # Fast path: no savepoints; _prepare already settled duplicates, so a conflict here is a rare race.
        stored, counted = _store_all(engine, settings, work, results, batch_s=batch_s, savepoints=False)
    except IntegrityError:
        # Another worker stored one of these ticket versions meanwhile: redo ticket by ticket.
        stored, counted = _store_all(engine, settings, work, results, batch_s=batch_s, savepoints=True)
    m = metrics()
    for source, decisions in counted:
        m.tickets_triaged.labels(source=source).inc()
        for name, decision in decisions:
            m.field_decisions.labels(field=name, decision=decision).inc()
    log.info("batch_stored", size=len(work), deliveries=len(stored.deliveries), drafts=len(stored.drafts))
    return stored


def _store_all(
    engine: Engine,
    settings: Settings,
    work: list[Work],
    results: list[TriageResult],
    *,
    batch_s: float,
    savepoints: bool,
) -> tuple[Stored, list[tuple[str, list[tuple[str, str]]]]]:
    """All rows of a batch in one transaction: (new ids, per-ticket decisions for the metrics)."""
    stored = Stored()
    counted: list[tuple[str, list[tuple[str, str]]]] = []
    with session_scope(engine) as session:
        for w, result in zip(work, results, strict=True):
            one = _store_one(session, settings, w, result, batch_s=batch_s, batch_size=len(work), savepoint=savepoints)
            if one is not None:
                stored.deliveries.append(one[0])
                if one[2] is not None:
                    stored.drafts.append(one[2])
                counted.append((w.ticket.source, one[1]))
    return stored, counted


def _store_one(
    session: Session,
    settings: Settings,
    w: Work,
    result: TriageResult,
    *,
    batch_s: float,
    batch_size: int,
    savepoint: bool,
) -> tuple[int, list[tuple[str, str]], int | None] | None:
    """Rows for one ticket: (delivery id, decisions, triage id when a draft is to follow); None when another worker
    already stored this ticket version."""
    ticket = w.ticket
    flags = sorted(set(w.flags + result.flags))
    allow_auto = not any(p in f.lower() for f in flags for p in DISTRUST_FLAG_PARTS)
    decisions = decide_fields(result.predictions, settings.policy, allow_auto=allow_auto)
    wants_draft = settings.model.draft_replies and bool((ticket.subject or "").strip() or (ticket.body or "").strip())
    triage = Triage(
        ticket_id=_pk(ticket.id),
        event_id=w.event_id,
        source_version=ticket.source_version,
        predictions={k: v.model_dump() for k, v in result.predictions.items()},
        decisions={k: {"decision": d.decision.value, "reason": d.reason} for k, d in decisions.items()},
        flags=flags,
        model_version=result.model_version[:300],
        adapter_version=(result.adapter_version or None),
        timings=dict(result.timings) | {"batch_s": batch_s, "batch_size": float(batch_size)},
        draft_status=DraftStatus.pending if wants_draft else DraftStatus.none,
    )
    if not savepoint:
        session.add(triage)
        session.flush()  # an IntegrityError aborts the batch; store_batch retries with savepoints
    else:
        try:
            with session.begin_nested():
                session.add(triage)
                session.flush()
        except IntegrityError:
            # Another worker stored this ticket version first (lease takeover): its outbox row is the one.
            mark(session, w.event_id, EventStatus.triaged, reason="ticket version already triaged")
            return None
    note = build_note(
        decisions,
        draft_pending=wants_draft,
        flags=flags,
        model_version=triage.model_version,
        adapter_version=triage.adapter_version,
        similar=_similar(session, settings, ticket, flags),
    )
    fields = {k: d.label for k, d in decisions.items() if d.decision == Decision.auto}
    # The key derives from the triage row inserted just above, so it cannot exist yet: insert directly
    # (add_delivery's look-up and savepoint are for callers that may repeat a key).
    delivery = Delivery(
        ticket_id=_pk(ticket.id),
        kind=DeliveryKind.triage,
        idempotency_key=triage_delivery_key(_pk(triage.id)),
        status=DeliveryStatus.pending,
        payload={"fields": fields, "note": note, "triage_id": triage.id},
    )
    session.add(delivery)
    session.flush()
    mark(session, w.event_id, EventStatus.triaged)
    decided = [(d.field, d.decision.value) for d in decisions.values()]
    return _pk(delivery.id), decided, (_pk(triage.id) if wants_draft else None)


def _similar(session: Session, settings: Settings, ticket: Ticket, flags: list[str]) -> list[Any]:
    """The earlier tickets most like this one, for the note (keys and links only); none when the look-up fails:
    the labels must not wait for, or fail with, a full-text query (a savepoint keeps PostgreSQL's transaction)."""
    language = next((f.removeprefix("language:") for f in flags if f.startswith("language:")), None)
    from service.knowledge.similar import similar_tickets  # lxml & co. are imported in pool children only

    try:
        with session.begin_nested():
            return list(similar_tickets(session, ticket, k=3, settings=settings, language=language))
    except Exception as exc:  # noqa: BLE001  evidence is a courtesy; the triage is what must be stored
        log.warning("similar_tickets_failed", ticket_id=ticket.id, error=f"{type(exc).__name__}: {exc}"[:300])
        return []


def mark(
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


def finish(
    engine: Engine, event_id: int, status: EventStatus, *, reason: str | None = None, error: str | None = None
) -> None:
    """`mark` in its own transaction."""
    with session_scope(engine) as session:
        mark(session, event_id, status, reason=reason, error=error)


def _pk(value: int | None) -> int:
    """The primary key of a flushed row (typed as int for mypy)."""
    if value is None:
        raise ValueError("row has no id yet")
    return value
