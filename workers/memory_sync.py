"""Reviewed tickets into the model's ticket memory, so what agents corrected or sent counts from the next batch on.

Retraining the adapter is what teaches the LLM; it takes minutes to hours and an operator decides when. The ticket
memory (models/ticket_memory.py) has no such cost: a reviewed ticket added to it at once becomes a neighbour that
votes for its corrected labels, and its sent reply becomes a suggestion for the next similar ticket. Each triage
process polls the database (`model.memory_sync_s`), so every worker of a fleet converges on the same memory
without any message between them; the poll runs in the thread that runs the model, between batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from service.db import session_scope
from service.domain.privacy import Erasure
from service.domain.tables import utcnow

log = structlog.get_logger(__name__)

# Re-read this much before the last poll: a review committed while the previous poll ran is not missed (rows read
# twice replace themselves by ticket id).
OVERLAP = timedelta(seconds=60)
# Erasures reach the memory even where reviews are not learned (memory_sync_s = 0): this often, at the latest.
FORGET_INTERVAL_S = 60.0


class MemorySync:
    """Per process, at most once per `interval_s`: tickets reviewed since the last poll into the model's memory."""

    def __init__(self, engine: Engine, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.clock = clock
        self._due = 0.0
        self._since: datetime | None = None
        self._forget_due = 0.0
        self._erased_upto = 0  # erasure-log id already applied; 0 at start replays the whole log once

    def __call__(self, triager: Any) -> int:
        """Forget erased tickets, then learn reviewed ones when due; returns the rows added or replaced."""
        self.forget_erased(triager)
        return self._remember(triager)

    def forget_erased(self, triager: Any) -> int:
        """Erasures logged since the last poll (all of them at start) out of the model's memory; rows removed."""
        forget = getattr(triager, "forget", None)
        interval = self.interval_s if self.interval_s > 0 else FORGET_INTERVAL_S
        if forget is None or self.clock() < self._forget_due:
            return 0
        self._forget_due = self.clock() + min(interval, FORGET_INTERVAL_S)
        from sqlmodel import col, select

        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Erasure.id, Erasure.memory_ids)
                .where(col(Erasure.id) > self._erased_upto)
                .order_by(col(Erasure.id))
            ).all()
        if not rows:
            return 0
        ids = sorted({str(i) for _, memory_ids in rows for i in (memory_ids or [])})
        removed = int(forget(ids)) if ids else 0
        self._erased_upto = max(int(i or 0) for i, _ in rows)
        log.info("memory_forgot", erasures=len(rows), tickets=len(ids), removed=removed)
        return removed

    def _remember(self, triager: Any) -> int:
        """Poll when due and the model has a memory to learn into; returns the rows added or replaced."""
        remember = getattr(triager, "remember", None)
        if self.interval_s <= 0 or remember is None or self.clock() < self._due:
            return 0
        self._due = self.clock() + self.interval_s
        from service.review.feedback import training_rows  # the API's package: imported only where it is used

        since = self._since or _parse(getattr(triager, "trained_at", None))
        started = utcnow()
        with session_scope(self.engine) as session:
            rows = list(training_rows(session, since=since))
        added = int(remember(rows)) if rows else 0
        self._since = started - OVERLAP
        if rows:
            log.info("memory_synced", reviewed=len(rows), remembered=added, since=since.isoformat())
        return added


def _parse(stamp: str | None) -> datetime:
    """The adapter's training time (reviews before it may be in its training data), else the beginning of time."""
    if stamp:
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime(1970, 1, 1, tzinfo=UTC)
