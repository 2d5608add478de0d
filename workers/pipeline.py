"""The triage flow as plain functions (no Celery): claim -> ticket -> model (labels) -> store -> policy -> outbox.

This is the first of two stages: the labels decide who sees a ticket and which SLA clock runs, so they are stored
and written back (the internal note) as soon as they exist; the reply suggestion is drafted after, by the draft
stage (workers/drafts.py, its own queue), so a slow draft never holds a label.

A task keeps going while a backlog exists: after a batch's model call, a helper thread stores its results
while this thread claims and scrubs the next batch and runs the model again, so the database and scrubbing
work overlap the model instead of adding to it (bench/pipeline.py measures the effect).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.ports import Triager
from service.domain.schemas import CanonicalTicket, TriageResult
from service.domain.tables import EventStatus, InboundEvent, Ticket, Triage, utcnow
from service.queue import DELIVER_TASK, DRAFT_TASK, TRIAGE_EVENT_TASK
from service.settings import Settings
from workers.batching import LeaseHeartbeat, claim_batch, next_batch, unclaim
from workers.metrics import metrics
from workers.store import Work, finish, scrub_text, store_batch

log = structlog.get_logger(__name__)

Enqueue = Callable[[str, int, float | None], None]  # (task name, row id, countdown seconds)


@dataclass
class PipelineContext:
    """What the flow needs, built once per process by the worker (or by a test)."""

    engine: Engine
    settings: Settings
    triager: Callable[[], Triager]  # lazy: the model loads in the process that runs it
    enqueue: Enqueue
    learn: Callable[[Triager], object] | None = None  # before each model call: reviewed tickets into its memory
    # the registry's shadow adapter, if any: (its registry id, its triager); predicts beside the live one, never acts
    shadow: Callable[[], tuple[int, Triager] | None] | None = None


@dataclass
class TriageReport:
    """What one triage task did (for logs and tests)."""

    claimed: list[int] = field(default_factory=list)
    triaged: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)  # triage ids handed to the draft stage


def triage_event(ctx: PipelineContext, event_id: int, *, redelivered: bool = False) -> TriageReport:
    """Handle one triage message: claim a batch around its event and run it, or return if already claimed."""
    batch = claim_batch(ctx.engine, ctx.settings, event_id, redelivered=redelivered)
    report = TriageReport(claimed=list(batch.event_ids), dead=list(batch.dead))
    for eid in batch.dead:
        metrics().dead_letters.labels(kind="event", reason="max_attempts").inc()
        log.warning("event_dead_lettered", event_id=eid)
    for eid in batch.released:
        ctx.enqueue(TRIAGE_EVENT_TASK, eid, None)
    if batch.event_ids:
        run_batches(ctx, batch.event_ids, report)
    return report


def run_batches(ctx: PipelineContext, event_ids: list[int], report: TriageReport) -> None:
    """Run the claimed batch, then further waiting batches until none is left (bounded by the time limit).

    Three stages overlap: while the model runs batch N (this thread), one helper thread claims and scrubs
    batch N+1 and another stores batch N-1, one batch per stage at a time.
    """
    deadline = time.monotonic() + ctx.settings.worker.task_time_limit_s / 2
    store: Future[None] | None = None
    shadows: list[Future[None]] = []
    heartbeat = LeaseHeartbeat(ctx.engine, ctx.settings, event_ids)
    with heartbeat, ThreadPoolExecutor(max_workers=2, thread_name_prefix="triage") as pool:
        try:
            prepared: Prepared | None = _prepare(ctx, event_ids, report)
            while prepared is not None:
                work, inputs = prepared
                more = time.monotonic() < deadline
                prefetch = pool.submit(_claim_and_prepare, ctx, report, heartbeat) if more else None
                if work:
                    try:
                        triager = ctx.triager()
                        _learn(ctx, triager)  # before the clock starts: a poll is not model latency
                        started = time.perf_counter()
                        results = triager.classify(inputs)
                        if len(results) != len(inputs):
                            raise RuntimeError(f"model returned {len(results)} results for {len(inputs)} tickets")
                    except Exception as exc:  # noqa: BLE001  any model failure: retry later, never lose events
                        _fail(ctx, work, exc, report)
                        if prefetch is not None:
                            _give_back(ctx, prefetch.result())
                        break
                    elapsed = time.perf_counter() - started
                    metrics().model_latency.observe(elapsed)
                    metrics().batch_size.observe(len(inputs))
                    log.info("batch_triaged", size=len(inputs), model_s=round(elapsed, 3))
                    if store is not None:
                        store.result()  # one batch in the store stage at a time; surfaces its errors
                    store = pool.submit(_store, ctx, report, work, results, elapsed)
                    shadowed = _shadow(ctx, pool, store, work, inputs)
                    if shadowed is not None:
                        shadows.append(shadowed)
                prepared = prefetch.result() if prefetch is not None else None
        finally:
            if store is not None:
                store.result()
            for done in shadows:
                done.result()


Prepared = tuple[list[Work], list[CanonicalTicket]]


def _learn(ctx: PipelineContext, triager: Triager) -> None:
    """Feed reviewed tickets to the model's memory; a failure here never holds up triage."""
    if ctx.learn is None:
        return
    try:
        ctx.learn(triager)
    except Exception as exc:  # noqa: BLE001  the next poll retries; triage goes on with the memory it has
        log.warning("memory_sync_failed", error=f"{type(exc).__name__}: {exc}")


def _shadow(
    ctx: PipelineContext,
    pool: ThreadPoolExecutor,
    stored: Future[None],
    work: list[Work],
    inputs: list[CanonicalTicket],
) -> Future[None] | None:
    """The shadow adapter's labels for the batch the live one just labelled, stored once the live triages are
    committed. Shadowing must never hold up or fail the live triage: errors are logged, the batch goes on."""
    try:
        shadow = ctx.shadow() if ctx.shadow is not None else None
        if shadow is None:
            return None
        _learn(ctx, shadow[1])
        started = time.perf_counter()
        results = shadow[1].classify(inputs)
        log.info("batch_shadowed", size=len(inputs), model_s=round(time.perf_counter() - started, 3))
    except Exception as exc:  # noqa: BLE001
        log.warning("shadow_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        return None
    return pool.submit(_store_shadow, ctx, stored, work, (shadow[0], results))


def _store_shadow(
    ctx: PipelineContext, stored: Future[None], work: list[Work], got: tuple[int, list[TriageResult]]
) -> None:
    """After the live batch is stored: its shadow predictions."""
    try:
        stored.result()
        from workers.adapter_sync import store_shadow

        store_shadow(ctx.engine, work, got[0], got[1])
    except Exception as exc:  # noqa: BLE001  a lost shadow batch only makes the comparison wait longer
        log.warning("shadow_store_failed", error=f"{type(exc).__name__}: {exc}"[:500])


def _claim_and_prepare(ctx: PipelineContext, report: TriageReport, heartbeat: LeaseHeartbeat) -> Prepared | None:
    """The next batch of waiting events, claimed and scrubbed; None when nothing waits."""
    ids = next_batch(ctx.engine, ctx.settings).event_ids
    heartbeat.add(ids)
    return _prepare(ctx, ids, report) if ids else None


def _store(
    ctx: PipelineContext, report: TriageReport, work: list[Work], results: list[TriageResult], elapsed: float
) -> None:
    """Store one batch, then enqueue its deliveries and drafts (after the commit: a worker must find the rows)."""
    stored = store_batch(ctx.engine, ctx.settings, work, results, batch_s=elapsed)
    report.triaged.extend(w.event_id for w in work)
    report.deliveries.extend(stored.deliveries)
    report.drafts.extend(stored.drafts)
    for delivery_id in stored.deliveries:
        ctx.enqueue(DELIVER_TASK, delivery_id, None)
    for triage_id in stored.drafts:
        ctx.enqueue(DRAFT_TASK, triage_id, None)


def _give_back(ctx: PipelineContext, prepared: Prepared | None) -> None:
    """Events claimed ahead of a failed model call never reached the model: queue them again, uncounted."""
    if not prepared or not prepared[0]:
        return
    ids = [w.event_id for w in prepared[0]]
    with session_scope(ctx.engine) as session:
        unclaim(session, ids)
    for eid in ids:
        ctx.enqueue(TRIAGE_EVENT_TASK, eid, None)


def _prepare(
    ctx: PipelineContext, event_ids: list[int], report: TriageReport
) -> tuple[list[Work], list[CanonicalTicket]]:
    """Load claimed events and tickets, settle duplicates, and scrub the text the model will read."""
    with Session(ctx.engine) as session:
        events = list(session.exec(select(InboundEvent).where(col(InboundEvent.id).in_(event_ids))))
        ticket_ids = {e.ticket_id for e in events if e.ticket_id is not None}
        tickets = {t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ticket_ids)))}
        done = set(
            session.exec(select(Triage.ticket_id, Triage.source_version).where(col(Triage.ticket_id).in_(ticket_ids)))
        )
    now = utcnow()
    work: list[Work] = []
    inputs: list[CanonicalTicket] = []
    seen: set[tuple[int, int]] = set()
    for ev in sorted(events, key=lambda e: e.id or 0):
        eid = ev.id or 0
        metrics().queue_wait.observe(max(0.0, (now - ev.received_at).total_seconds()))
        ticket = tickets.get(ev.ticket_id) if ev.ticket_id is not None else None
        if ticket is None or ticket.id is None:
            finish(ctx.engine, eid, EventStatus.ignored, reason="no ticket")
            continue
        key = (ticket.id, ticket.source_version)
        if key in done or key in seen:  # this ticket version is already triaged (redelivery, sweeper, peer)
            finish(ctx.engine, eid, EventStatus.triaged, reason="ticket version already triaged")
            report.duplicates.append(eid)
            continue
        seen.add(key)
        subject, f1 = scrub_text(ticket.subject)
        body, f2 = scrub_text(ticket.body)
        # the ticket's own flags too: what ingest saw before redacting (hidden tags, look-alikes) still counts
        flags = sorted(set(f1 + f2 + list(ticket.flags or []) + (["body_truncated"] if ticket.body_truncated else [])))
        work.append(Work(event_id=eid, ticket=ticket, flags=flags))
        inputs.append(
            CanonicalTicket(
                source=ticket.source,
                external_id=ticket.external_id,
                external_key=ticket.external_key,
                subject=subject,
                body=body,
                body_truncated=ticket.body_truncated,
                source_version=ticket.source_version,
            )
        )
    return work, inputs


def _fail(ctx: PipelineContext, work: list[Work], exc: Exception, report: TriageReport) -> None:
    """Mark a failed batch's events failed (retried alone, with backoff) or dead after max_attempts."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("batch_failed", size=len(work), error=error)
    with Session(ctx.engine) as session:
        attempts = {
            int(i or 0): a
            for i, a in session.exec(
                select(InboundEvent.id, InboundEvent.attempts).where(
                    col(InboundEvent.id).in_([w.event_id for w in work])
                )
            )
        }
    for w in work:
        n = max(attempts.get(w.event_id, 1), 1)
        if n >= ctx.settings.worker.max_attempts:
            finish(ctx.engine, w.event_id, EventStatus.dead, error=error)
            metrics().dead_letters.labels(kind="event", reason="model_error").inc()
            report.dead.append(w.event_id)
        else:
            finish(ctx.engine, w.event_id, EventStatus.failed, error=error)
            report.failed.append(w.event_id)
            ctx.enqueue(TRIAGE_EVENT_TASK, w.event_id, float(2**n))
