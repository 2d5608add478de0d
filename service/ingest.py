"""Store one verified, normalised webhook event and its ticket in a single transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.db import session_scope
from service.domain.schemas import CanonicalTicket, NormalizedEvent
from service.domain.tables import EventStatus, InboundEvent, LabelCorrection, Ticket, utcnow

Outcome = Literal["queued", "duplicate", "ignored", "applied", "stale"]


@dataclass(frozen=True)
class StoreResult:
    """What happened to one delivery; `enqueue` says whether the triage task must be published."""

    outcome: Outcome
    event_id: int | None
    ticket_id: int | None
    reason: str | None = None

    @property
    def enqueue(self) -> bool:
        """Only new triage events go onto the broker."""
        return self.outcome == "queued"


def store_event(engine: Engine, event: NormalizedEvent, *, payload: str) -> StoreResult:
    """Commit the event (and upsert its ticket) once; concurrent copies of one delivery resolve to one row."""
    for _attempt in range(3):
        try:
            with session_scope(engine) as session:
                return _store(session, event, payload)
        except IntegrityError:
            # A concurrent request inserted the same delivery or the same new ticket first: look again.
            continue
    with session_scope(engine) as session:
        return _store(session, event, payload)


def _store(session: Session, event: NormalizedEvent, payload: str) -> StoreResult:
    existing = session.exec(
        select(InboundEvent.id, InboundEvent.ticket_id).where(
            InboundEvent.source == event.source, InboundEvent.delivery_id == event.delivery_id
        )
    ).first()
    if existing is not None:
        return StoreResult("duplicate", existing[0], existing[1], "delivery already stored")

    ticket, fresh = _upsert_ticket(session, event.ticket) if event.ticket else (None, True)
    status, reason = _decide(session, event, fresh)
    row = InboundEvent(
        source=event.source,
        delivery_id=event.delivery_id,
        event_type=event.event_type[:100],
        business_key=event.business_key[:300],
        external_id=event.ticket.external_id if event.ticket else None,
        ticket_id=ticket.id if ticket else None,
        status=status,
        ignored_reason=reason,
        payload=payload,
    )
    session.add(row)
    session.flush()
    if status == EventStatus.applied and ticket is not None and ticket.id is not None:
        for change in event.changes:
            if change.new != change.old:
                session.add(
                    LabelCorrection(
                        ticket_id=ticket.id,
                        field=change.field,
                        old_value=change.old,
                        new_value=change.new,
                        author=event.actor,
                        origin="itsm",
                        event_id=row.id,
                    )
                )
    outcome: Outcome = {"queued": "queued", "applied": "applied"}.get(
        status, "stale" if reason == "stale" else "ignored"
    )  # type: ignore[assignment]
    return StoreResult(outcome, row.id, ticket.id if ticket else None, reason)


def _decide(session: Session, event: NormalizedEvent, fresh: bool) -> tuple[EventStatus, str | None]:
    """Status of the new event row: queued for triage, applied for updates, else ignored with a reason."""
    if event.action == "ignore":
        return EventStatus.ignored, event.ignore_reason
    if not fresh and event.action != "triage":
        # An older version arrived after a newer one (RELIABILITY T5). A creation event is still triaged:
        # the ticket row already holds the newer text, which is what the model should read.
        return EventStatus.ignored, "stale"
    if event.action == "update":
        return EventStatus.applied, None
    same_version = session.exec(
        select(InboundEvent.id).where(InboundEvent.business_key == event.business_key[:300]).limit(1)
    ).first()
    if same_version is not None:
        return EventStatus.ignored, "redelivery of an event already stored under another delivery id"
    return EventStatus.queued, None


def _upsert_ticket(session: Session, data: CanonicalTicket) -> tuple[Ticket, bool]:
    """Insert or update the ticket in place; returns (row, fresh) where fresh is False for a stale version."""
    ticket = session.exec(
        select(Ticket).where(Ticket.source == data.source, Ticket.external_id == data.external_id).with_for_update()
    ).first()
    if ticket is None:
        ticket = Ticket(source=data.source, external_id=data.external_id, external_key=data.external_key)
        _apply(ticket, data)
        session.add(ticket)
        session.flush()
        return ticket, True
    if data.source_version < ticket.source_version:
        return ticket, False
    _apply(ticket, data)
    session.add(ticket)
    session.flush()
    return ticket, True


def _apply(ticket: Ticket, data: CanonicalTicket) -> None:
    """Copy the canonical fields onto the row."""
    ticket.external_key = data.external_key
    ticket.url = data.url
    ticket.subject = data.subject
    ticket.body = data.body
    ticket.body_truncated = data.body_truncated
    ticket.reporter = data.reporter
    ticket.priority = data.priority
    ticket.category = data.category
    ticket.labels = list(data.labels)
    ticket.status = data.status
    ticket.extra = dict(data.extra)
    ticket.source_version = data.source_version
    ticket.created_at_source = data.created_at
    ticket.updated_at_source = data.updated_at
    ticket.updated_at = utcnow()


def mark_unqueued(engine: Engine, event_id: int, error: str) -> None:
    """The broker refused the task: leave the event `received` so the sweeper enqueues it later."""
    with session_scope(engine) as session:
        session.execute(
            update(InboundEvent)
            .where(InboundEvent.id == event_id, InboundEvent.status == EventStatus.queued)  # type: ignore[arg-type]
            .values(status=EventStatus.received, last_error=error[:2000], updated_at=utcnow())
        )
