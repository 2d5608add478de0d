"""add_delivery: insert-if-absent on the idempotency key."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from service.db import session_scope
from service.domain.tables import Delivery, DeliveryKind, DeliveryStatus
from service.outbox import add_delivery, reply_delivery_key
from tests.workers.conftest import seed_event


def test_add_delivery_returns_the_existing_row_for_a_repeated_key(engine: Engine) -> None:
    seed_event(engine)
    with Session(engine) as s:
        from service.domain.tables import Ticket

        ticket_id = s.exec(select(Ticket.id)).one()
    assert ticket_id is not None
    with session_scope(engine) as s:
        first = add_delivery(
            s,
            ticket_id=ticket_id,
            kind=DeliveryKind.reply,
            payload={"public_reply": "hi", "suggestion_id": 1},
            idempotency_key=reply_delivery_key(1),
        )
    with session_scope(engine) as s:
        again = add_delivery(
            s,
            ticket_id=ticket_id,
            kind=DeliveryKind.reply,
            payload={"public_reply": "changed"},
            idempotency_key=reply_delivery_key(1),
        )
    assert again.id == first.id
    assert again.payload["public_reply"] == "hi"
    assert again.status == DeliveryStatus.pending
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Delivery)).one() == 1
