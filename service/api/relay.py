"""The enqueue relay: publishes committed events to the broker off the request path.

A webhook is acknowledged once its event row is committed (status `received`). This thread publishes the
triage task by name and then marks the rows `queued`, in batches. When a publish fails the relay pauses for a
cool-down and then retries what it holds, so a broker blip delays those events by seconds, not until the next
sweep; a broker outage never slows or fails an ack. If the process dies with ids still in memory, or more
than `_BACKLOG_MAX` pile up during an outage, those rows stay `received` and the sweeper enqueues them: nothing
is lost.
"""

from __future__ import annotations

import queue
import threading
import time

import structlog
from celery import Celery
from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine

from service.api.metrics import ApiMetrics
from service.domain.tables import EventStatus, InboundEvent, utcnow
from service.ingest import write_lock
from service.queue import TRIAGE_EVENT_TASK, enqueue

log = structlog.get_logger(__name__)

_BATCH = 200
# Wait this long after the first id for more: under load one publish round and one UPDATE then serve many acks
# (the UPDATE per id was a sixth of the API's CPU); at low rates it only delays the enqueue by 20 ms.
_LINGER_S = 0.02

# Ids held for a retry while the broker is down; past this the oldest are left to the sweeper (memory bound).
_BACKLOG_MAX = 100_000

_EVENTS = InboundEvent.__table__  # type: ignore[attr-defined]
# Core, built once (the ORM bulk update compiled a new statement each time): received -> queued, conditional,
# because a worker may already have claimed the row.
_MARK_QUEUED = (
    update(_EVENTS)
    .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)), _EVENTS.c.status == EventStatus.received.value)
    .values(status=EventStatus.queued.value, updated_at=bindparam("now"))
)


class EnqueueRelay:
    """A daemon thread draining event ids to the broker, with a cool-down after a failed publish."""

    def __init__(self, celery: Celery, engine: Engine, metrics: ApiMetrics, *, cooldown_s: float = 5.0) -> None:
        self._celery = celery
        self._engine = engine
        self._metrics = metrics
        self._cooldown_s = cooldown_s
        self._ids: queue.Queue[int | None] = queue.Queue(maxsize=100_000)
        self._open_until = 0.0
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while publishing is paused after a broker failure."""
        return time.monotonic() >= self._open_until

    def start(self) -> None:
        """Start the publishing thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="enqueue-relay", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is pending (bounded by timeout_s), then stop."""
        if self._thread is not None:
            self._ids.put(None)
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def submit(self, event_id: int) -> None:
        """Hand a committed event to the relay; never blocks the request (a full queue leaves it to the sweeper)."""
        try:
            self._ids.put_nowait(event_id)
        except queue.Full:
            log.warning("relay_queue_full", event_id=event_id)

    def _run(self) -> None:
        pending: list[int] = []  # submitted, not yet published (a batch, or a backlog after a failed publish)
        while True:
            stop = self._gather(pending)
            while pending and self.healthy:  # in batches: one UPDATE's id list stays bounded
                pending = self._publish(pending[:_BATCH]) + pending[_BATCH:]
            if len(pending) > _BACKLOG_MAX:
                log.warning("relay_backlog_full", left_to_sweeper=len(pending) - _BACKLOG_MAX)
                del pending[: len(pending) - _BACKLOG_MAX]
            if stop:
                return  # anything still pending stays `received`: the sweeper enqueues it

    def _gather(self, pending: list[int]) -> bool:
        """Add submitted ids to `pending`; True when stop was requested.

        Idle: block for the first id, then linger for more (up to a batch). Holding a backlog: collect until
        the cool-down ends, so the retry comes by itself and not only with the next webhook.
        """
        if pending:
            deadline = max(self._open_until, time.monotonic())
        else:
            first = self._ids.get()
            if first is None:
                return True
            pending.append(first)
            deadline = time.monotonic() + _LINGER_S
        while len(pending) < _BATCH or not self.healthy:
            try:
                item = self._ids.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is None:
                return True
            pending.append(item)
        return False

    def _publish(self, batch: list[int]) -> list[int]:
        """Publish each id and mark the published ones `queued` in one UPDATE; returns the ids not published."""
        published = 0
        try:
            # One producer (and broker connection) for the whole batch: acquiring one per message cost as much
            # as the publish itself.
            with self._celery.producer_or_acquire() as producer:
                for event_id in batch:
                    enqueue(self._celery, TRIAGE_EVENT_TASK, event_id, producer=producer)
                    published += 1
        except Exception as exc:  # noqa: BLE001  (kombu raises many types: OperationalError, OSError, ...)
            self._open_until = time.monotonic() + self._cooldown_s
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._metrics.broker_up.set(0)
            self._metrics.enqueue_failures.inc()
            log.warning(
                "enqueue_failed", pending=len(batch) - published, retry_in_s=self._cooldown_s, error=self.last_error
            )
        if published:
            self._metrics.broker_up.set(1)
            self._mark_queued(batch[:published])
        return batch[published:]

    def _mark_queued(self, ids: list[int]) -> None:
        """received -> queued (conditional: a worker may already have claimed the row)."""
        try:
            with write_lock(self._engine), self._engine.begin() as conn:
                conn.execute(_MARK_QUEUED, {"ids": ids, "now": utcnow()})
        except Exception as exc:  # noqa: BLE001  (the rows stay `received`; the sweeper re-enqueues, workers dedupe)
            log.warning("relay_mark_failed", count=len(ids), error=type(exc).__name__)
