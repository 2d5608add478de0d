"""Delivering one outbox row: claim, write once, classify failures into retry / unknown / dead."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from service.db import session_scope
from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream
from service.domain.ports import TicketWriter
from service.domain.render import links_in
from service.domain.schemas import WriteBack, WriteOutcome
from service.domain.tables import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Suggestion,
    SuggestionStatus,
    Ticket,
    utcnow,
)
from service.queue import DELIVER_TASK
from service.settings import Settings
from workers.metrics import metrics

log = structlog.get_logger(__name__)

RETRYABLE = (DeliveryStatus.pending, DeliveryStatus.failed, DeliveryStatus.unknown)
TERMINAL = (DeliveryStatus.sent, DeliveryStatus.dead)


@dataclass
class DeliveryContext:
    """What delivering needs, built once per process."""

    engine: Engine
    settings: Settings
    writer_for: Callable[[str], TicketWriter]  # source -> connector (cached by the caller)
    enqueue: Callable[[str, int, float | None], None]


@dataclass(frozen=True)
class Claimed:
    """A delivery this process now owns, with everything needed to write it."""

    write: WriteBack
    source: str
    kind: str
    attempts: int  # including this one
    payload: dict[str, Any]


def backoff_s(settings: Settings, attempts: int, retry_after_s: float | None) -> float:
    """Exponential backoff with equal jitter, capped; never shorter than the server's Retry-After."""
    w = settings.worker
    base = min(w.delivery_backoff_cap_s, w.delivery_backoff_base_s * 2 ** max(0, attempts - 1))
    delay = base / 2 + random.uniform(0, base / 2)
    return max(delay, retry_after_s or 0.0)


def claim_delivery(engine: Engine, settings: Settings, delivery_id: int, *, redelivered: bool = False) -> Claimed | str:
    """Mark the row in_flight under a lease; a string says why not (done, busy, not_due, missing)."""
    now = utcnow()
    with session_scope(engine) as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            return "missing"
        if row.status in TERMINAL:
            return "done"
        if row.status == DeliveryStatus.in_flight:
            if not redelivered and row.lease_until is not None and row.lease_until > now:
                return "busy"
        elif row.next_attempt_at is not None and row.next_attempt_at > now:
            return "not_due"
        ticket = session.get(Ticket, row.ticket_id)
        if ticket is None:
            return "missing"
        # A row that was in flight or unknown may already have been written: the connector must look first.
        attempts = row.attempts  # read now: the ORM update below synchronises the loaded row
        check_existing = attempts > 0 or row.status in (DeliveryStatus.unknown, DeliveryStatus.in_flight)
        res = session.execute(
            update(Delivery)
            .where(
                col(Delivery.id) == delivery_id,
                col(Delivery.status) == row.status,
                col(Delivery.attempts) == row.attempts,
            )
            .values(
                status=DeliveryStatus.in_flight,
                attempts=row.attempts + 1,
                lease_until=now + timedelta(seconds=settings.worker.lease_s),
                updated_at=now,
            )
        )
        if not getattr(res, "rowcount", 0):
            return "busy"
        p = dict(row.payload)
        write = WriteBack(
            kind=row.kind,  # type: ignore[arg-type]
            external_id=ticket.external_id,
            external_key=ticket.external_key,
            idempotency_key=row.idempotency_key,
            fields={str(k): str(v) for k, v in (p.get("fields") or {}).items()},
            note=p.get("note"),
            public_reply=p.get("public_reply"),
            check_existing=check_existing,
            allowed_links=links_in(
                f"{ticket.subject}\n{ticket.body}"
            ),  # model output may only link what the ticket did
        )
        return Claimed(write=write, source=ticket.source, kind=row.kind, attempts=attempts + 1, payload=p)


def deliver(ctx: DeliveryContext, delivery_id: int, *, redelivered: bool = False) -> str:
    """Handle one deliver message; returns the outcome (sent, retry, unknown, dead, or why not run)."""
    claimed = claim_delivery(ctx.engine, ctx.settings, delivery_id, redelivered=redelivered)
    if isinstance(claimed, str):
        return claimed
    try:
        writer = ctx.writer_for(claimed.source)
    except ValueError as exc:  # no credentials for this system: retrying cannot help until an operator acts
        return _dead(ctx, delivery_id, claimed, f"write-back not configured: {exc}", reason="not_configured")
    try:
        outcome = writer.write(claimed.write)
    except PermanentUpstream as exc:
        return _dead(ctx, delivery_id, claimed, f"permanent: {exc}", reason="permanent")
    except OutcomeUnknown as exc:
        return _retry(ctx, delivery_id, claimed, exc, DeliveryStatus.unknown)
    except TransientUpstream as exc:
        return _retry(ctx, delivery_id, claimed, exc, DeliveryStatus.failed)
    except Exception as exc:  # noqa: BLE001  a bug or an unmapped error may have happened after the request went out
        return _retry(ctx, delivery_id, claimed, exc, DeliveryStatus.unknown)
    return _sent(ctx, delivery_id, claimed, outcome)


def _sent(ctx: DeliveryContext, delivery_id: int, claimed: Claimed, outcome: WriteOutcome) -> str:
    """Record success; a reply's suggestion becomes delivered."""
    now = utcnow()
    with session_scope(ctx.engine) as session:
        session.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id, col(Delivery.status) == DeliveryStatus.in_flight)
            .values(
                status=DeliveryStatus.sent,
                external_ref=(outcome.external_ref or None) and outcome.external_ref[:300],
                lease_until=None,
                next_attempt_at=None,
                last_error=None,
                updated_at=now,
            )
        )
        _update_suggestion(session, claimed, SuggestionStatus.delivered)
    label = "already_done" if outcome.already_done else "sent"
    metrics().deliveries.labels(kind=claimed.kind, outcome=label).inc()
    log.info(
        "delivery_sent",
        delivery_id=delivery_id,
        kind=claimed.kind,
        attempts=claimed.attempts,
        already_done=outcome.already_done,
        unmapped=sorted(outcome.unmapped_fields),
    )
    return "sent"


def _retry(ctx: DeliveryContext, delivery_id: int, claimed: Claimed, exc: Exception, status: DeliveryStatus) -> str:
    """Schedule the next attempt (never before Retry-After), or dead-letter when retries are exhausted."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if claimed.attempts > ctx.settings.worker.delivery_max_retries:
        return _dead(
            ctx,
            delivery_id,
            claimed,
            f"retries exhausted after {claimed.attempts} attempts: {error}",
            reason="retries_exhausted",
        )
    retry_after = exc.retry_after_s if isinstance(exc, TransientUpstream) else None
    delay = backoff_s(ctx.settings, claimed.attempts, retry_after)
    due: datetime = utcnow() + timedelta(seconds=delay)
    with session_scope(ctx.engine) as session:
        session.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id, col(Delivery.status) == DeliveryStatus.in_flight)
            .values(status=status, next_attempt_at=due, lease_until=None, last_error=error, updated_at=utcnow())
        )
    outcome = "unknown" if status == DeliveryStatus.unknown else "retry"
    metrics().deliveries.labels(kind=claimed.kind, outcome=outcome).inc()
    log.warning(
        "delivery_retry_scheduled",
        delivery_id=delivery_id,
        status=str(status),
        delay_s=round(delay, 2),
        attempts=claimed.attempts,
        error=error,
    )
    ctx.enqueue(DELIVER_TASK, delivery_id, delay)
    return outcome


def _dead(ctx: DeliveryContext, delivery_id: int, claimed: Claimed, error: str, *, reason: str) -> str:
    """Give up: the reason stays on the row (API, UI) and in metrics."""
    with session_scope(ctx.engine) as session:
        session.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id, col(Delivery.status) == DeliveryStatus.in_flight)
            .values(status=DeliveryStatus.dead, lease_until=None, last_error=error[:2000], updated_at=utcnow())
        )
        _update_suggestion(session, claimed, SuggestionStatus.failed)
    m = metrics()
    m.deliveries.labels(kind=claimed.kind, outcome="dead").inc()
    m.dead_letters.labels(kind="delivery", reason=reason).inc()
    log.error("delivery_dead_lettered", delivery_id=delivery_id, kind=claimed.kind, error=error)
    return "dead"


def _update_suggestion(session: Any, claimed: Claimed, status: SuggestionStatus) -> None:
    """Move the approved suggestion behind a reply delivery to delivered / failed."""
    sid = claimed.payload.get("suggestion_id")
    if claimed.kind != DeliveryKind.reply or sid is None:
        return
    session.execute(
        update(Suggestion)
        .where(col(Suggestion.id) == int(sid), col(Suggestion.status) == SuggestionStatus.approved)
        .values(status=status, version=col(Suggestion.version) + 1)
    )
