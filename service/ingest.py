"""Store one verified, normalised webhook event and its ticket in a single transaction."""

from __future__ import annotations

import functools
import json
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.crypto import PayloadCipher
from service.domain.at_rest import SafeEvent, redact_event, redact_payload
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


def store_event(
    engine: Engine, event: NormalizedEvent, *, payload: str, cipher: PayloadCipher | None = None
) -> StoreResult:
    """Commit the event (and upsert its ticket) once; concurrent copies of one delivery resolve to one row.

    Secrets are redacted from the ticket text and the raw payload before anything is written (the caller has
    verified the signature and read the delivery id from the raw bytes already); the raw payload is kept only
    sealed under `cipher`, else not at all. The hot path is three statements in one transaction (ticket upsert,
    optional business-key probe, event insert-or-nothing), written in SQLAlchemy Core with ON CONFLICT so
    PostgreSQL and SQLite both do it atomically.
    """
    parsed = json.loads(payload) if payload else None
    safe = redact_event(event, parsed)
    stored = cipher.seal(redact_payload(parsed, list(safe.found))) if cipher is not None else ""
    with write_lock(engine):
        for _attempt in range(3):
            try:
                return _store(engine, safe, stored)
            except IntegrityError:
                continue  # lost a race on a unique key (e.g. a concurrent first insert): look again
        return _store(engine, safe, stored)


_SQLITE_WRITER = threading.Lock()


def write_lock(engine: Engine) -> AbstractContextManager[object]:
    """SQLite admits one writer: queue our threads on a lock rather than in SQLite's sleeping busy handler."""
    return _SQLITE_WRITER if engine.dialect.name == "sqlite" else nullcontext()


_TICKETS = Ticket.__table__  # type: ignore[attr-defined]
_EVENTS = InboundEvent.__table__  # type: ignore[attr-defined]
_CORRECTIONS = LabelCorrection.__table__  # type: ignore[attr-defined]
_TICKET_COLUMNS = [c.name for c in _TICKETS.columns if c.name != "id"]
_KEEP_ON_UPDATE = {"source", "external_id", "flags", "created_at"}  # identity, pipeline flags and first-seen stay


_FIND_TICKET = select(_TICKETS.c.id).where(
    _TICKETS.c.source == bindparam("source"), _TICKETS.c.external_id == bindparam("external_id")
)
_FIND_BUSINESS_KEY = select(_EVENTS.c.id).where(_EVENTS.c.business_key == bindparam("business_key")).limit(1)
_FIND_DELIVERY = select(_EVENTS.c.id, _EVENTS.c.ticket_id).where(
    _EVENTS.c.source == bindparam("source"), _EVENTS.c.delivery_id == bindparam("delivery_id")
)


@dataclass(frozen=True)
class _Statements:
    """The hot-path statements, built once per dialect: constructing them per request cost more than running them."""

    upsert_ticket: Any
    insert_event: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    """ON CONFLICT statements for PostgreSQL or SQLite (both support ... RETURNING)."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    base = insert(_TICKETS)
    upsert = base.on_conflict_do_update(
        index_elements=["source", "external_id"],
        set_={name: base.excluded[name] for name in _TICKET_COLUMNS if name not in _KEEP_ON_UPDATE},
        where=_TICKETS.c.source_version <= base.excluded.source_version,
    ).returning(_TICKETS.c.id)
    event = insert(_EVENTS).on_conflict_do_nothing(index_elements=["source", "delivery_id"]).returning(_EVENTS.c.id)
    return _Statements(upsert_ticket=upsert, insert_event=event)


class _Duplicate(Exception):
    """Raised inside the transaction to roll back the ticket upsert of an already-stored delivery."""


def _store(engine: Engine, safe: SafeEvent, payload: str) -> StoreResult:
    sql = _statements(engine.dialect.name)
    event = safe.event
    try:
        with engine.begin() as conn:
            ticket_id, fresh = _upsert_ticket(conn, sql, event.ticket, safe) if event.ticket else (None, True)
            status, reason = _decide(conn, sql, event, fresh)
            now = utcnow()
            row = {
                "source": event.source,
                "delivery_id": event.delivery_id,
                "event_type": event.event_type[:100],
                "business_key": event.business_key[:300],
                "external_id": event.ticket.external_id if event.ticket else None,
                "ticket_id": ticket_id,
                "status": status.value,
                "ignored_reason": reason,
                "attempts": 0,
                "last_error": None,
                "payload": payload,
                "received_at": now,
                "updated_at": now,
                "lease_until": None,
            }
            event_id = conn.execute(sql.insert_event, row).scalar()
            if event_id is None:
                raise _Duplicate
            if status == EventStatus.applied and ticket_id is not None:
                _add_corrections(conn, event, ticket_id, event_id)
    except _Duplicate:
        with engine.connect() as conn:
            found = conn.execute(_FIND_DELIVERY, {"source": event.source, "delivery_id": event.delivery_id}).first()
        ids = (found[0], found[1]) if found else (None, None)
        return StoreResult("duplicate", ids[0], ids[1], "delivery already stored")
    outcome: Outcome = "received" if status == EventStatus.received else "applied"
    if status == EventStatus.ignored:
        outcome = "stale" if reason == "stale" else "ignored"
    return StoreResult(outcome, event_id, ticket_id, reason)


def _decide(conn: Connection, sql: _Statements, event: NormalizedEvent, fresh: bool) -> tuple[EventStatus, str | None]:
    """Status of the new event row: received (to triage), applied (an update), else ignored with a reason."""
    if event.action == "ignore":
        return EventStatus.ignored, event.ignore_reason
    if not fresh and event.action != "triage":
        # An older version arrived after a newer one (RELIABILITY T5). A creation event is still triaged:
        # the ticket row already holds the newer text, which is what the model should read.
        return EventStatus.ignored, "stale"
    if event.action == "update":
        return EventStatus.applied, None
    if conn.execute(_FIND_BUSINESS_KEY, {"business_key": event.business_key[:300]}).first() is not None:
        return EventStatus.ignored, "redelivery of an event already stored under another delivery id"
    return EventStatus.received, None


def _upsert_ticket(conn: Connection, sql: _Statements, data: CanonicalTicket, safe: SafeEvent) -> tuple[int, bool]:
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
        "reporter_digest": safe.reporter_digest,
        "priority": data.priority,
        "category": data.category,
        "labels": list(data.labels),
        "extra": dict(data.extra),
        "status": data.status,
        "source_version": data.source_version,
        "created_at_source": data.created_at,
        "updated_at_source": data.updated_at,
        "flags": list(safe.flags),
        "created_at": now,
        "updated_at": now,
    }
    ticket_id = conn.execute(sql.upsert_ticket, values).scalar()
    if ticket_id is not None:
        if safe.flags:
            _add_flags(conn, int(ticket_id), safe.flags)
        return int(ticket_id), True
    stale = conn.execute(_FIND_TICKET, {"source": data.source, "external_id": data.external_id}).scalar_one()
    return int(stale), False


def _add_flags(conn: Connection, ticket_id: int, flags: list[str]) -> None:
    """An update keeps the flags earlier versions earned (a secret once sent stays "rotate it"); adds the new."""
    current = conn.execute(select(_TICKETS.c.flags).where(_TICKETS.c.id == ticket_id)).scalar() or []
    merged = sorted(set(current) | set(flags))
    if merged != sorted(current):
        conn.execute(_TICKETS.update().where(_TICKETS.c.id == ticket_id).values(flags=merged))


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
