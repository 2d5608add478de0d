"""The agents' decisions (approve, edit-and-approve, reject, correct labels), shared by the UI and the JSON API.

Each decision is one conditional UPDATE guarded by the suggestion's version and status, so two agents acting on
the same draft cannot both win: the loser changes nothing, gets a 409 and leaves a `conflict` audit row.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from celery import Celery
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.privacy import text_digest
from service.domain.tables import DeliveryKind, LabelCorrection, Suggestion, SuggestionStatus, Triage, utcnow
from service.outbox import add_delivery, reply_delivery_key
from service.queue import DELIVER_TASK, enqueue
from service.review import audit
from service.review.auth import ReviewError
from service.review.feedback import edit_distance, effective_labels, latest_corrections

log = structlog.get_logger(__name__)
MAX_REPLY_CHARS = 10_000


@dataclass(frozen=True)
class Decision:
    """The outcome of a decision: the suggestion's new state and the delivery it created (if any)."""

    suggestion_id: int
    status: str
    version: int
    delivery_id: int | None = None
    edit_distance: int | None = None


def approve(
    engine: Engine, celery: Celery, *, suggestion_id: int, actor: str, version: int | None, reply: str | None
) -> Decision:
    """Approve a draft (edited when `reply` differs): record it, add the reply delivery, then enqueue it."""
    with session_scope(engine) as session:
        sug = _get(session, suggestion_id)
        expected = sug.version if version is None else version
        final = sug.draft if reply is None else reply.replace("\r\n", "\n")
        if not final.strip():
            raise ReviewError(422, "empty_reply", "The reply is empty; reject the draft instead.")
        if len(final) > MAX_REPLY_CHARS:
            raise ReviewError(422, "reply_too_long", f"Replies are limited to {MAX_REPLY_CHARS} characters.")
        distance = edit_distance(sug.draft, final)
        won = _transition(
            session, sug, expected, SuggestionStatus.approved, actor=actor, final_reply=final, edit_distance=distance
        )
        if won:
            delivery = add_delivery(
                session,
                ticket_id=sug.ticket_id,
                kind=DeliveryKind.reply,
                payload={"public_reply": final, "suggestion_id": suggestion_id},
                idempotency_key=reply_delivery_key(suggestion_id),
            )
            audit.record(
                session,
                actor=actor,
                action="approved",
                target_type="suggestion",
                target_id=suggestion_id,
                # Digests, not text: the audit log is append-only, so it never holds what erasure must remove.
                before={"status": sug.status, "version": expected, "draft": text_digest(sug.draft)},
                after={
                    "status": SuggestionStatus.approved.value,
                    "version": expected + 1,
                    "final_reply": text_digest(final),
                    "edited": distance > 0,
                    "edit_distance": distance,
                    "delivery_id": delivery.id,
                },
            )
            delivery_id = delivery.id
    if not won:
        _conflict(engine, sug, actor=actor, attempted="approve", expected=expected)
    assert delivery_id is not None
    _enqueue(celery, delivery_id)
    return Decision(suggestion_id, SuggestionStatus.approved, expected + 1, delivery_id, distance)


def reject(engine: Engine, *, suggestion_id: int, actor: str, version: int | None, reason: str) -> Decision:
    """Reject a draft with a reason; nothing is sent."""
    reason = reason.strip()
    if not reason:
        raise ReviewError(422, "reason_required", "Say why the draft is rejected (it teaches the next model).")
    with session_scope(engine) as session:
        sug = _get(session, suggestion_id)
        expected = sug.version if version is None else version
        won = _transition(session, sug, expected, SuggestionStatus.rejected, actor=actor, reason=reason[:2000])
        if won:
            audit.record(
                session,
                actor=actor,
                action="rejected",
                target_type="suggestion",
                target_id=suggestion_id,
                before={"status": sug.status, "version": expected},
                after={
                    "status": SuggestionStatus.rejected.value,
                    "version": expected + 1,
                    "reason": text_digest(reason),
                },
            )
    if not won:
        _conflict(engine, sug, actor=actor, attempted="reject", expected=expected)
    return Decision(suggestion_id, SuggestionStatus.rejected, expected + 1)


def correct_labels(
    engine: Engine, celery: Celery, *, ticket_id: int, actor: str, fields: dict[str, str]
) -> tuple[list[LabelCorrection], int | None]:
    """Record label corrections (origin review) and a `correction` delivery writing them to the ITSM tool."""
    with session_scope(engine) as session:
        triage = session.exec(
            select(Triage).where(Triage.ticket_id == ticket_id).order_by(col(Triage.id).desc())
        ).first()
        if triage is None:
            raise ReviewError(404, "not_found", "No triaged ticket with this id.")
        current = effective_labels(triage, latest_corrections(session, [ticket_id]).get(ticket_id, {}))
        changed: dict[str, str] = {}
        for field, label in fields.items():
            pred = (triage.predictions or {}).get(field)
            if pred is None:
                raise ReviewError(422, "unknown_field", f"{field!r} is not a predicted field of this ticket.")
            allowed = set((pred.get("probabilities") or {}).keys())
            if allowed and label not in allowed:
                raise ReviewError(422, "unknown_label", f"{label!r} is not a label of {field!r}.")
            if label != current.get(field):
                changed[field] = label
        if not changed:
            return [], None
        rows = [
            LabelCorrection(
                ticket_id=ticket_id, field=f, old_value=current.get(f), new_value=v, author=actor, origin="review"
            )
            for f, v in sorted(changed.items())
        ]
        session.add_all(rows)
        session.flush()
        delivery = add_delivery(
            session,
            ticket_id=ticket_id,
            kind=DeliveryKind.correction,
            payload={"fields": changed, "note": None},
            idempotency_key=f"correction:{ticket_id}:{rows[0].id}",
        )
        audit.record(
            session,
            actor=actor,
            action="label_corrected",
            target_type="ticket",
            target_id=ticket_id,
            before={f: current.get(f) for f in changed},
            after={**changed, "delivery_id": delivery.id, "correction_ids": [r.id for r in rows]},
        )
        delivery_id = delivery.id
    assert delivery_id is not None
    _enqueue(celery, delivery_id)
    return rows, delivery_id


def _get(session: Session, suggestion_id: int) -> Suggestion:
    sug = session.get(Suggestion, suggestion_id)
    if sug is None:
        raise ReviewError(404, "not_found", "No suggestion with this id.")
    return sug


def _transition(
    session: Session, sug: Suggestion, expected: int, status: SuggestionStatus, *, actor: str, **values: object
) -> bool:
    """The one conditional UPDATE: succeeds only if nobody decided this draft since `expected` was read."""
    result = session.execute(
        update(Suggestion)
        .where(
            col(Suggestion.id) == sug.id,
            col(Suggestion.version) == expected,
            col(Suggestion.status) == SuggestionStatus.pending,
        )
        .values(status=status, reviewer=actor, decided_at=utcnow(), version=Suggestion.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _conflict(engine: Engine, sug: Suggestion, *, actor: str, attempted: str, expected: int) -> None:
    """Audit the losing decision and answer 409 with what the winner left."""
    with Session(engine) as session:
        current = session.get(Suggestion, sug.id)
        state = {"status": current.status, "version": current.version, "reviewer": current.reviewer} if current else {}
    audit.record_now(
        engine,
        actor=actor,
        action="conflict",
        target_type="suggestion",
        target_id=str(sug.id),
        before={"attempted": attempted, "expected_version": expected},
        after=state,
    )
    log.info("review_conflict", suggestion_id=sug.id, actor=actor, attempted=attempted)
    raise ReviewError(409, "conflict", "Another agent already decided this draft; reload to see the outcome.")


def _enqueue(celery: Celery, delivery_id: int) -> None:
    """Publish after commit; a broker outage leaves the delivery pending for the sweeper, never losing it."""
    try:
        enqueue(celery, DELIVER_TASK, delivery_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure is survivable here
        log.warning("delivery_enqueue_failed", delivery_id=delivery_id, error=f"{type(exc).__name__}: {exc}")
