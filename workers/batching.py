"""Claiming inbound events for one model batch: conditional UPDATEs, so each event is in at most one batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.tables import EventStatus, InboundEvent, utcnow
from service.settings import Settings

# Waiting work a batch may take; `failed` only for the task's own event (poison tickets never join a batch).
CLAIMABLE = (EventStatus.received, EventStatus.queued, EventStatus.failed)
WAITING = (EventStatus.received, EventStatus.queued)
POLL_S = 0.05
# A triage claim lives at most this long unless renewed: a dead worker's batch is retried within a minute.
TRIAGE_LEASE_CAP_S = 60
log = structlog.get_logger(__name__)


@dataclass
class Batch:
    """Events claimed together; they share one lease deadline, which identifies the batch in the database."""

    lease_until: datetime
    event_ids: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)  # own event dead-lettered instead of claimed
    solo: bool = False  # own event had failed before: run it alone so it cannot sink other tickets
    released: list[int] = field(default_factory=list)  # peers of a crashed batch, back to queued: enqueue them


def triage_lease_s(settings: Settings) -> int:
    """How long a triage claim lasts without renewal: short, because LeaseHeartbeat renews it while it runs."""
    return min(settings.worker.lease_s, TRIAGE_LEASE_CAP_S)


def renew_leases(session: Session, event_ids: list[int], *, lease_until: datetime) -> int:
    """Extend the lease of events still processing; one value for all keeps a batch identifiable."""
    if not event_ids:
        return 0
    res = session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.id).in_(event_ids), col(InboundEvent.status) == EventStatus.processing)
        .values(lease_until=lease_until)
    )
    return _rows(res)


class LeaseHeartbeat:
    """Renews the leases of a task's claimed events while it runs, so a short lease still covers a long batch.

    When the worker dies the renewals stop and the sweeper (or a redelivered message) retries the batch within
    one lease, whatever the broker.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        event_ids: list[int],
        renew: Callable[..., int] | None = None,
    ) -> None:
        self._engine = engine
        self._lease = triage_lease_s(settings)
        self._ids = list(event_ids)
        self._renew = renew or renew_leases  # the draft stage renews its triages' leases the same way
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, event_ids: list[int]) -> None:
        """Cover events claimed later by the same task."""
        with self._lock:
            self._ids.extend(event_ids)

    def _run(self) -> None:
        while not self._stop.wait(max(1.0, self._lease / 3)):
            with self._lock:
                ids = list(self._ids)
            try:
                with session_scope(self._engine) as session:
                    self._renew(session, ids, lease_until=utcnow() + timedelta(seconds=self._lease))
            except Exception as exc:  # noqa: BLE001  a missed renewal only risks a duplicate run (deduped)
                log.warning("lease_renewal_failed", error=f"{type(exc).__name__}: {exc}")


def claim_own(
    session: Session, event_id: int, *, lease_until: datetime, max_attempts: int, redelivered: bool
) -> tuple[str, int, list[int]]:
    """Claim the own event: (claimed | busy | done | dead | missing, attempts before, released peers)."""
    row = session.get(InboundEvent, event_id)
    if row is None:
        return "missing", 0, []
    now = utcnow()
    # Read before any UPDATE: ORM-enabled updates synchronise the loaded row in place.
    status, lease, attempts, last_error = row.status, row.lease_until, row.attempts, row.last_error
    if status in (EventStatus.triaged, EventStatus.ignored, EventStatus.dead):
        return "done", attempts, []
    takeover = status == EventStatus.processing and (redelivered or lease is None or lease < now)
    if status == EventStatus.processing and not takeover:
        return "busy", attempts, []  # a live batch holds it: this message is a duplicate
    released: list[int] = []
    if takeover and lease is not None:
        # Redelivered after its worker died: the batch's other events were claimed under the same lease.
        released = release_batch_peers(session, lease_until=lease, keep=event_id)
    if attempts >= max_attempts:
        # A message redelivered after every crash must not loop forever (RELIABILITY T10).
        dead = session.execute(
            update(InboundEvent)
            .where(col(InboundEvent.id) == event_id, col(InboundEvent.status) == status)
            .values(
                status=EventStatus.dead,
                lease_until=None,
                updated_at=now,
                last_error=f"gave up after {attempts} attempts: {last_error or 'worker lost'}",
            )
        )
        return ("dead" if _rows(dead) else "busy"), attempts, released
    # The old status and attempts are part of the WHERE: two workers racing for the row cannot both win.
    # `received` and `queued` both mean "waiting": the API's relay marks the row queued only after publishing,
    # so a fast worker can read `received` and the relay flip it before this UPDATE; matching the exact status
    # then lost the claim and, the message being consumed, left the event to the sweeper (a CI flake in T4).
    waiting = status in WAITING
    res = session.execute(
        update(InboundEvent)
        .where(
            col(InboundEvent.id) == event_id,
            col(InboundEvent.status).in_(WAITING) if waiting else col(InboundEvent.status) == status,
            col(InboundEvent.attempts) == attempts,
        )
        .values(
            status=EventStatus.processing,
            lease_until=lease_until,
            attempts=attempts + 1,
            updated_at=now,
        )
    )
    return ("claimed" if _rows(res) else "busy"), attempts, released


def claim_waiting(session: Session, *, limit: int, lease_until: datetime, exclude: list[int]) -> list[int]:
    """Claim up to `limit` other waiting first-attempt events, oldest first."""
    if limit <= 0:
        return []
    candidates = list(
        session.exec(
            select(InboundEvent.id)
            .where(
                col(InboundEvent.status).in_(WAITING),
                col(InboundEvent.attempts) == 0,
                col(InboundEvent.ticket_id).is_not(None),
                col(InboundEvent.id).not_in(exclude),
            )
            .order_by(col(InboundEvent.id))
            .limit(limit)
        )
    )
    if not candidates:
        return []
    res = session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.id).in_(candidates), col(InboundEvent.status).in_(WAITING))
        .values(status=EventStatus.processing, lease_until=lease_until, attempts=1, updated_at=utcnow())
        .returning(col(InboundEvent.id))
    )
    return sorted(int(r[0]) for r in res)


def claim_batch(engine: Engine, settings: Settings, event_id: int, *, redelivered: bool = False) -> Batch:
    """Claim the own event, then fill the batch with waiting events for up to batch_wait_ms."""
    batch = Batch(lease_until=utcnow() + timedelta(seconds=triage_lease_s(settings)))
    with session_scope(engine) as session:
        outcome, before, batch.released = claim_own(
            session,
            event_id,
            lease_until=batch.lease_until,
            max_attempts=settings.worker.max_attempts,
            redelivered=redelivered,
        )
    if outcome == "dead":
        batch.dead.append(event_id)
    if outcome != "claimed":
        return batch
    batch.event_ids.append(event_id)
    if before > 0:
        batch.solo = True
        return batch
    fill_batch(engine, settings, batch)
    return batch


def next_batch(engine: Engine, settings: Settings) -> Batch:
    """A fresh batch of waiting events (for a worker that keeps going while a backlog exists); may be empty."""
    batch = Batch(lease_until=utcnow() + timedelta(seconds=triage_lease_s(settings)))
    with session_scope(engine) as session:
        batch.event_ids = claim_waiting(
            session, limit=settings.model.batch_size, lease_until=batch.lease_until, exclude=[]
        )
    if batch.event_ids:
        fill_batch(engine, settings, batch)
    return batch


def fill_batch(engine: Engine, settings: Settings, batch: Batch) -> None:
    """Add waiting events until the batch is full or batch_wait_ms has passed."""
    size = settings.model.batch_size
    deadline = time.monotonic() + settings.model.batch_wait_ms / 1000
    while len(batch.event_ids) < size:
        with session_scope(engine) as session:
            more = claim_waiting(
                session,
                limit=size - len(batch.event_ids),
                lease_until=batch.lease_until,
                exclude=batch.event_ids,
            )
        batch.event_ids.extend(more)
        if len(batch.event_ids) >= size or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)


def release_batch_peers(session: Session, *, lease_until: datetime, keep: int) -> list[int]:
    """Put the other events of a crashed batch (same lease deadline, still processing) back to queued."""
    res = session.execute(
        update(InboundEvent)
        .where(
            col(InboundEvent.status) == EventStatus.processing,
            col(InboundEvent.lease_until) == lease_until,
            col(InboundEvent.id) != keep,
        )
        .values(status=EventStatus.queued, lease_until=None, updated_at=utcnow())
        .returning(col(InboundEvent.id))
    )
    return [int(r[0]) for r in res]


def unclaim(session: Session, event_ids: list[int]) -> None:
    """Return claimed events that never reached the model to the queue, without counting the attempt."""
    session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.id).in_(event_ids), col(InboundEvent.status) == EventStatus.processing)
        .values(
            status=EventStatus.queued,
            lease_until=None,
            attempts=col(InboundEvent.attempts) - 1,
            updated_at=utcnow(),
        )
    )


def _rows(result: object) -> int:
    """Rows matched by an UPDATE (CursorResult.rowcount; typed loosely by SQLAlchemy)."""
    return int(getattr(result, "rowcount", 0) or 0)
