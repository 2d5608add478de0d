"""Store one verified, normalised webhook event and its ticket in a single transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.domain.schemas import CanonicalTicket, NormalizedEvent
from service.domain.tables import EventStatus, InboundEvent, LabelCorrection, Ticket, utcnow

Outcome = Literal["received", "duplicate", "ignored", "applied", "stale"]


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
        return self.outcome == "received"


def store_event(engine: Engine, event: NormalizedEvent, *, payload: str) -> StoreResult:
    """Commit the event (and upsert its ticket) once; concurrent copies of one delivery resolve to one row.

    The hot path is three statements in one transaction (ticket upsert, optional business-key probe, event
    insert-or-nothing), written in SQLAlchemy Core with ON CONFLICT so PostgreSQL and SQLite both do it atomically.
    """
    for _attempt in range(3):
        try:
            return _store(engine, event, payload)
        except IntegrityError:
            continue  # lost a race on a unique key (e.g. a concurrent first insert): look again
    return _store(engine, event, payload)


def _insert(engine: Engine) -> Any:
    """The dialect's INSERT construct (both support ON CONFLICT ... RETURNING)."""
    return pg_insert if engine.dialect.name == "postgresql" else sqlite_insert


class _Duplicate(Exception):
    """Raised inside the transaction to roll back the ticket upsert of an already-stored delivery."""


def _store(engine: Engine, event: NormalizedEvent, payload: str) -> StoreResult:
    insert = _insert(engine)
    try:
        with engine.begin() as conn:
            ticket_id, fresh = _upsert_ticket(conn, insert, event.ticket) if event.ticket else (None, True)
            status, reason = _decide(conn, event, fresh)
            stmt = (
                insert(_EVENTS)
                .values(
                    source=event.source,
                    delivery_id=event.delivery_id,
                    event_type=event.event_type[:100],
                    business_key=event.business_key[:300],
                    external_id=event.ticket.external_id if event.ticket else None,
                    ticket_id=ticket_id,
                    status=status.value,
                    ignored_reason=reason,
                    attempts=0,
                    payload=payload,
                    received_at=utcnow(),
                    updated_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
                .returning(_EVENTS.c.id)
            )
            event_id = conn.execute(stmt).scalar()
            if event_id is None:
                raise _Duplicate
            if status == EventStatus.applied and ticket_id is not None:
                _add_corrections(conn, event, ticket_id, event_id)
    except _Duplicate:
        with engine.connect() as conn:
            row = conn.execute(
                select(_EVENTS.c.id, _EVENTS.c.ticket_id).where(
                    _EVENTS.c.source == event.source, _EVENTS.c.delivery_id == event.delivery_id
                )
            ).first()
        return StoreResult("duplicate", row[0] if row else None, row[1] if row else None, "delivery already stored")
    outcome: Outcome = "received" if status == EventStatus.received else "applied"
    if status == EventStatus.ignored:
        outcome = "stale" if reason == "stale" else "ignored"
    return StoreResult(outcome, event_id, ticket_id, reason)


def _decide(conn: Connection, event: NormalizedEvent, fresh: bool) -> tuple[EventStatus, str | None]:
    """Status of the new event row: received (to triage), applied (an update), else ignored with a reason."""
    if event.action == "ignore":
        return EventStatus.ignored, event.ignore_reason
    if not fresh and event.action != "triage":
        # An older version arrived after a newer one (RELIABILITY T5). A creation event is still triaged:
        # the ticket row already holds the newer text, which is what the model should read.
        return EventStatus.ignored, "stale"
    if event.action == "update":
        return EventStatus.applied, None
    same_version = conn.execute(
        select(_EVENTS.c.id).where(_EVENTS.c.business_key == event.business_key[:300]).limit(1)
    ).first()
    if same_version is not None:
        return EventStatus.ignored, "redelivery of an event already stored under another delivery id"
    return EventStatus.received, None


_TICKETS = Ticket.__table__  # type: ignore[attr-defined]
_EVENTS = InboundEvent.__table__  # type: ignore[attr-defined]
_CORRECTIONS = LabelCorrection.__table__  # type: ignore[attr-defined]


def _upsert_ticket(conn: Connection, insert: Any, data: CanonicalTicket) -> tuple[int, bool]:
    """Insert or update in place unless the stored version is newer; returns (id, fresh)."""
    now = utcnow()
    values = {
        "source": data.source,
        "external_id": data.external_id,
        "external_key": data.external_key,
        "url": data.url,
        "subject": data.subject,
        "body": data.body,
        "body_truncated": data.body_truncated,
        "reporter": data.reporter,
        "priority": data.priority,
        "category": data.category,
        "labels": list(data.labels),
        "extra": dict(data.extra),
        "status": data.status,
        "source_version": data.source_version,
        "created_at_source": data.created_at,
        "updated_at_source": data.updated_at,
        "flags": [],
        "created_at": now,
        "updated_at": now,
    }
    stmt = insert(_TICKETS).values(**values)
    keep = {"source", "external_id", "flags", "created_at"}  # identity, pipeline flags and first-seen stay
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "external_id"],
        set_={name: stmt.excluded[name] for name in values if name not in keep},
        where=_TICKETS.c.source_version <= stmt.excluded.source_version,
    ).returning(_TICKETS.c.id)
    ticket_id = conn.execute(stmt).scalar()
    if ticket_id is not None:
        return int(ticket_id), True
    stale = conn.execute(
        select(_TICKETS.c.id).where(_TICKETS.c.source == data.source, _TICKETS.c.external_id == data.external_id)
    ).scalar_one()
    return int(stale), False


def _add_corrections(conn: Connection, event: NormalizedEvent, ticket_id: int, event_id: int) -> None:
    """A person changed a field we predict: keep it as a label correction (training signal)."""
    rows = [
        {
            "ticket_id": ticket_id,
            "field": c.field,
            "old_value": c.old,
            "new_value": c.new,
            "author": event.actor,
            "origin": "itsm",
            "event_id": event_id,
            "created_at": utcnow(),
        }
        for c in event.changes
        if c.new != c.old
    ]
    if rows:
        conn.execute(_CORRECTIONS.insert(), rows)
