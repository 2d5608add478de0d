"""The outbox: one Delivery row per outbound write, recorded before the call (usable from API and workers).

Payload contract (what `workers` turns into a `WriteBack`; the target ticket comes from `ticket_id`):
  - kind "triage":     {"fields": {field: label}, "note": str}
  - kind "reply":      {"public_reply": str, "suggestion_id": int}
  - kind "correction": {"fields": {field: label}, "note": str | None}
Keys outside these are kept but ignored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.domain.tables import Delivery, DeliveryKind, DeliveryStatus, utcnow


def add_delivery(
    session: Session, *, ticket_id: int, kind: DeliveryKind, payload: dict[str, Any], idempotency_key: str
) -> Delivery:
    """Insert a pending delivery unless one with this idempotency key exists; return the row either way."""
    existing = session.exec(select(Delivery).where(Delivery.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return existing
    now = utcnow()
    row = Delivery(
        ticket_id=ticket_id,
        kind=str(kind),
        idempotency_key=idempotency_key,
        status=DeliveryStatus.pending,
        payload=payload,
        next_attempt_at=None,
        created_at=now,
        updated_at=now,
    )
    # A savepoint keeps the caller's transaction usable when a concurrent writer inserted the same key first.
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = session.exec(select(Delivery).where(Delivery.idempotency_key == idempotency_key)).first()
        if existing is None:
            raise
        return existing
    return row


def triage_delivery_key(triage_id: int) -> str:
    """Idempotency key of the internal note + fields written for one triage."""
    return f"triage:{triage_id}"


def reply_delivery_key(suggestion_id: int) -> str:
    """Idempotency key of the public reply of one approved suggestion (exactly one per draft)."""
    return f"reply:{suggestion_id}"
