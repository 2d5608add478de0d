"""The draft stage, after the labels: claim triages whose reply suggestion is pending -> model -> Suggestion.

Labels are stored and written back by the first stage (workers/pipeline.py) as soon as they exist; the reply
suggestion (a past reply or an LLM draft) follows here, on its own queue, batching and time limit, so a draft that
takes seconds never holds a label. Exactly once: a triage is claimed by a conditional UPDATE of its draft_status
(pending -> drafting, with a lease a heartbeat renews), and a suggestion is UNIQUE per triage (one per ticket
version). A claim that outlives its lease (a dead worker) is taken over by a redelivered message or re-enqueued by
the sweeper; after max_attempts failures the draft is `failed`, which the review UI shows. No second ITSM note is
written: the first stage's note already says that a draft will be waiting in the review UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from service.db import session_scope
from service.domain.grounding import check_draft
from service.domain.ports import Triager
from service.domain.sanitize import normalize_unicode, redact
from service.domain.schemas import CanonicalTicket, DraftResult
from service.domain.tables import DraftStatus, Suggestion, Ticket, Triage, utcnow
from service.queue import DRAFT_TASK
from service.settings import Settings
from workers.batching import POLL_S, TRIAGE_LEASE_CAP_S, LeaseHeartbeat
from workers.metrics import metrics
from workers.store import scrub_text

log = structlog.get_logger(__name__)

Enqueue = Callable[[str, int, float | None], None]


@dataclass
class DraftContext:
    """What the draft stage needs, built once per process by the worker (or by a test)."""

    engine: Engine
    settings: Settings
    triager: Callable[[], Triager]
    enqueue: Enqueue
    learn: Callable[[Triager], object] | None = None  # before each model call: reviewed tickets into its memory


@dataclass
class DraftReport:
    """What one draft task did (for logs and tests)."""

    claimed: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)  # a suggestion was stored
    empty: list[int] = field(default_factory=list)  # nothing to suggest (draft_status none)
    superseded: list[int] = field(default_factory=list)  # a newer version of the ticket was triaged meanwhile
    failed: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)


@dataclass
class _Item:
    """One claimed triage with its ticket, and the knowledge-base passages found for it."""

    triage_id: int
    ticket: Ticket
    created_at: datetime
    language: str | None = None
    sources: list[Any] = field(default_factory=list)  # service.knowledge.retrieval.Source


def draft_lease_s(settings: Settings) -> int:
    """A draft claim lasts this long unless renewed (the heartbeat renews it while the batch runs)."""
    return min(settings.worker.lease_s, TRIAGE_LEASE_CAP_S)


def batch_size(settings: Settings) -> int:
    """Most triages drafted as one batch."""
    return settings.model.draft_batch_size or settings.model.batch_size


def draft_triage(ctx: DraftContext, triage_id: int, *, redelivered: bool = False) -> DraftReport:
    """Handle one draft message: claim its triage (and other pending ones) and draft them, or return at once."""
    report = DraftReport()
    lease = utcnow() + timedelta(seconds=draft_lease_s(ctx.settings))
    with session_scope(ctx.engine) as session:
        outcome = _claim_own(session, triage_id, lease, ctx.settings.worker.max_attempts, redelivered)
    if outcome == "dead":
        report.dead.append(triage_id)
        metrics().dead_letters.labels(kind="draft", reason="max_attempts").inc()
        return report
    if outcome != "claimed":
        return report
    ids = [triage_id, *_fill(ctx, lease, exclude=[triage_id])]
    report.claimed.extend(ids)
    deadline = time.monotonic() + ctx.settings.worker.draft_time_limit_s / 2
    heartbeat = LeaseHeartbeat(ctx.engine, ctx.settings, ids, renew=renew_draft_leases)
    with heartbeat:
        while ids:
            _run_batch(ctx, ids, report)
            if time.monotonic() >= deadline:
                break
            lease = utcnow() + timedelta(seconds=draft_lease_s(ctx.settings))
            ids = _fill(ctx, lease, exclude=[])
            heartbeat.add(ids)
            report.claimed.extend(ids)
    return report


def _claim_own(session: Session, triage_id: int, lease: datetime, max_attempts: int, redelivered: bool) -> str:
    """claimed | busy | done | dead | missing, by one conditional UPDATE (two workers cannot both win)."""
    row = session.get(Triage, triage_id)
    if row is None:
        return "missing"
    status, attempts, until = row.draft_status, row.draft_attempts, row.draft_lease_until
    now = utcnow()
    if status in (DraftStatus.none, DraftStatus.ready, DraftStatus.failed):
        return "done"
    if status == DraftStatus.drafting and not (redelivered or until is None or until < now):
        return "busy"
    if attempts >= max_attempts:
        res = session.execute(
            update(Triage)
            .where(col(Triage.id) == triage_id, col(Triage.draft_status) == status)
            .values(
                draft_status=DraftStatus.failed,
                draft_lease_until=None,
                draft_error=f"gave up after {attempts} attempts: {row.draft_error or 'worker lost'}"[:2000],
            )
        )
        return "dead" if _rows(res) else "busy"
    res = session.execute(
        update(Triage)
        .where(
            col(Triage.id) == triage_id,
            col(Triage.draft_status) == status,
            col(Triage.draft_attempts) == attempts,
        )
        .values(draft_status=DraftStatus.drafting, draft_lease_until=lease, draft_attempts=attempts + 1)
    )
    return "claimed" if _rows(res) else "busy"


def _fill(ctx: DraftContext, lease: datetime, *, exclude: list[int]) -> list[int]:
    """Claim other first-attempt pending triages, oldest first, until the batch is full or the wait is over."""
    size = batch_size(ctx.settings) - len(exclude)
    deadline = time.monotonic() + ctx.settings.model.draft_batch_wait_ms / 1000
    got: list[int] = []
    while size > len(got):
        with session_scope(ctx.engine) as session:
            got += _claim_waiting(session, size - len(got), lease, exclude + got)
        if size <= len(got) or time.monotonic() >= deadline or not exclude:
            break  # a follow-up batch (no own triage) takes what waits now instead of waiting for more
        time.sleep(POLL_S)
    return got


def _claim_waiting(session: Session, limit: int, lease: datetime, exclude: list[int]) -> list[int]:
    now = utcnow()
    candidates = list(
        session.exec(
            select(Triage.id)
            .where(
                col(Triage.draft_status) == DraftStatus.pending,
                col(Triage.draft_attempts) == 0,
                (col(Triage.draft_lease_until).is_(None)) | (col(Triage.draft_lease_until) <= now),
                col(Triage.id).not_in(exclude),
            )
            .order_by(col(Triage.id))
            .limit(limit)
        )
    )
    if not candidates:
        return []
    res = session.execute(
        update(Triage)
        .where(col(Triage.id).in_(candidates), col(Triage.draft_status) == DraftStatus.pending)
        .values(draft_status=DraftStatus.drafting, draft_lease_until=lease, draft_attempts=1)
        .returning(col(Triage.id))
    )
    return sorted(int(r[0]) for r in res)


def renew_draft_leases(session: Session, triage_ids: list[int], *, lease_until: datetime) -> int:
    """Extend the lease of triages still drafting (LeaseHeartbeat calls this while a batch runs)."""
    if not triage_ids:
        return 0
    res = session.execute(
        update(Triage)
        .where(col(Triage.id).in_(triage_ids), col(Triage.draft_status) == DraftStatus.drafting)
        .values(draft_lease_until=lease_until)
    )
    return _rows(res)


def _run_batch(ctx: DraftContext, ids: list[int], report: DraftReport) -> None:
    """Load, skip superseded versions, draft, store; a failing model call fails the batch's triages for retry."""
    items, superseded = _load(ctx.engine, ids)
    if superseded:
        _finish(ctx.engine, superseded, DraftStatus.none, error="a newer version of the ticket was triaged")
        report.superseded.extend(superseded)
    if not items:
        return
    inputs = [_canonical(i.ticket) for i in items]
    evidence = _evidence(ctx, items)
    try:
        triager = ctx.triager()
        if ctx.learn is not None:
            try:
                ctx.learn(triager)  # replies agents sent a minute ago are suggestions now
            except Exception as exc:  # noqa: BLE001  the next poll retries; drafting goes on with what it has
                log.warning("memory_sync_failed", error=f"{type(exc).__name__}: {exc}")
        groups = _fast_first(triager, inputs)
    except Exception as exc:  # noqa: BLE001  any model failure: retry later, never lose the draft
        _fail(ctx, [i.triage_id for i in items], exc, report)
        return
    # past replies are stored before the LLM drafts of the same batch are made: one ticket without a similar past
    # reply must not hold the others' suggestions for the seconds its draft takes on a CPU
    for group in groups:
        batch = [items[k] for k in group]
        try:
            started = time.perf_counter()
            results = triager.draft([inputs[k] for k in group], [evidence[k] for k in group])
            if len(results) != len(group):
                raise RuntimeError(f"model returned {len(results)} drafts for {len(group)} tickets")
        except Exception as exc:  # noqa: BLE001  any model failure: retry later, never lose the draft
            _fail(ctx, [i.triage_id for i in batch], exc, report)
            continue
        elapsed = time.perf_counter() - started
        metrics().draft_batch_latency.observe(elapsed)
        log.info("drafts_made", size=len(batch), model_s=round(elapsed, 3))
        _store(ctx, batch, results, report)


def _fast_first(triager: object, inputs: list[CanonicalTicket]) -> list[list[int]]:
    """The batch's positions in drafting order: past replies (fast) first, then LLM drafts, when the model can
    tell them apart (`needs_generation`); else one group."""
    needs = getattr(triager, "needs_generation", None)
    if needs is None or len(inputs) < 2:
        return [list(range(len(inputs)))]
    slow = list(needs(inputs))
    fast = [k for k, s in enumerate(slow) if not s]
    rest = [k for k, s in enumerate(slow) if s]
    return [g for g in (fast, rest) if g]


def _load(engine: Engine, ids: list[int]) -> tuple[list[_Item], list[int]]:
    """Claimed triages with their tickets; those whose ticket has a newer triaged version are superseded."""
    with Session(engine) as session:
        triages = list(session.exec(select(Triage).where(col(Triage.id).in_(ids))))
        ticket_ids = {t.ticket_id for t in triages}
        tickets = {t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ticket_ids)))}
        newest = dict(
            session.exec(
                select(Triage.ticket_id, func.max(Triage.source_version))
                .where(col(Triage.ticket_id).in_(ticket_ids))
                .group_by(col(Triage.ticket_id))
            ).all()
        )
    items, superseded = [], []
    for t in sorted(triages, key=lambda t: t.id or 0):
        ticket = tickets.get(t.ticket_id)
        if ticket is None or t.source_version < newest.get(t.ticket_id, t.source_version):
            superseded.append(int(t.id or 0))
        else:
            language = next((f.removeprefix("language:") for f in t.flags if f.startswith("language:")), None)
            items.append(_Item(int(t.id or 0), ticket, t.created_at, language))
    return items, superseded


def _evidence(ctx: DraftContext, items: list[_Item]) -> list[str | None]:
    """Knowledge-base passages for each ticket above the score floor (service/knowledge/retrieval.py), kept on the
    item and rendered as quoted data for the prompt; a failed look-up drafts without evidence."""
    kb = ctx.settings.kb
    if kb.evidence_passages <= 0:
        return [None] * len(items)
    from service.knowledge.retrieval import evidence_for, render_evidence  # imported in pool children only

    out: list[str | None] = []
    with Session(ctx.engine) as session:
        for item in items:
            try:
                item.sources = evidence_for(
                    session,
                    text=f"{item.ticket.subject}\n{item.ticket.body}",
                    language=item.language,
                    k=kb.evidence_passages,
                    token_budget=kb.evidence_token_budget,
                    min_score=kb.min_score,
                )
            except Exception as exc:  # noqa: BLE001  evidence improves a draft; its absence must not stop one
                session.rollback()
                log.warning("evidence_lookup_failed", triage_id=item.triage_id, error=f"{type(exc).__name__}: {exc}")
                item.sources = []
            out.append(render_evidence(item.sources) or None)
    return out


def _canonical(ticket: Ticket) -> CanonicalTicket:
    """The ticket as the model reads it: secrets and Unicode tricks scrubbed first, as in the first stage."""
    subject, _ = scrub_text(ticket.subject)
    body, _ = scrub_text(ticket.body)
    return CanonicalTicket(
        source=ticket.source,
        external_id=ticket.external_id,
        external_key=ticket.external_key,
        subject=subject,
        body=body,
        body_truncated=ticket.body_truncated,
        source_version=ticket.source_version,
    )


def _store(ctx: DraftContext, items: list[_Item], results: list[DraftResult], report: DraftReport) -> None:
    """One transaction: a Suggestion per draft (UNIQUE per triage), the triage's draft state and flags."""
    now = utcnow()
    m = metrics()
    with session_scope(ctx.engine) as session:
        for item, result in zip(items, results, strict=True):
            triage = session.get(Triage, item.triage_id)
            if triage is None or triage.draft_status != DraftStatus.drafting:
                continue  # taken over by another worker after our lease ran out: its result counts
            draft, draft_flags, sources = _finished_draft(item, result)
            if draft:
                try:
                    with session.begin_nested():
                        ticket_id = int(item.ticket.id or 0)
                        session.add(
                            Suggestion(triage_id=item.triage_id, ticket_id=ticket_id, draft=draft, sources=sources)
                        )
                        session.flush()
                except IntegrityError:  # stored by a worker that took our claim over: one suggestion per version
                    pass
            triage.draft_reply = draft
            triage.flags = sorted(set(triage.flags) | set(result.flags) | set(draft_flags))
            triage.timings = dict(triage.timings) | {k: float(v) for k, v in result.timings.items()}
            triage.draft_status = DraftStatus.ready if draft else DraftStatus.none
            triage.draft_lease_until = None
            triage.draft_error = None
            triage.draft_ready_at = now
            session.add(triage)
            (report.drafted if draft else report.empty).append(item.triage_id)
            m.drafts.labels(source=(result.source or "none").split(":")[0] if draft else "none").inc()
            m.draft_latency.observe(max(0.0, (now - _aware(item.created_at)).total_seconds()))
    log.info("drafts_stored", drafted=len(report.drafted), empty=len(report.empty))


def _finished_draft(item: _Item, result: DraftResult) -> tuple[str | None, list[str], list[dict[str, Any]]]:
    """The draft as stored: scrubbed, the articles it was shown named with their links (an LLM draft), every link,
    address, number and code block its ticket and sources do not back removed and flagged
    (service/domain/grounding.py); with its flags and the sources the review UI shows."""
    if not result.draft_reply:
        return None, [], []
    # secrets redacted and hidden characters stripped; not `scrub`: a past reply's "Priority: high" line is the
    # agent's own text, not a directive to take out
    normal, _, hidden = normalize_unicode(result.draft_reply)
    draft, counts = redact(normal)
    flags = (["draft_contains_secret"] if counts else []) + (["draft_hidden_characters"] if hidden else [])
    source = result.source or "model"
    if source.startswith("history:"):
        ref = source.removeprefix("history:")
        sources = [{"kind": "ticket", "number": ref, "title": f"Reply sent to earlier ticket {ref}",
                    "passage": (result.grounds[0] if result.grounds else "")[:600]}]  # fmt: skip
    else:
        sources = [s.as_json() for s in item.sources]
        if item.sources:  # say which articles the draft was given, whatever the model wrote
            cited = "; ".join(
                f"[{n}] {s.title}" + (f" ({s.url})" if s.url else "") for n, s in enumerate(item.sources, 1)
            )
            draft = f"{draft}\n\nReferences: {cited}"
    backing = [*result.grounds, *(f"{s.title} {s.url or ''} {s.passage}" for s in item.sources)]
    grounded = check_draft(draft, ticket_text=f"{item.ticket.subject}\n{item.ticket.body}", sources=backing)
    return grounded.text, [*flags, *grounded.flags], sources


def _fail(ctx: DraftContext, ids: list[int], exc: Exception, report: DraftReport) -> None:
    """Failed drafts go back to pending with a backoff (the lease column holds the not-before time), or to failed
    after max_attempts."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    log.warning("draft_batch_failed", size=len(ids), error=error)
    now = utcnow()
    with session_scope(ctx.engine) as session:
        rows = list(session.exec(select(Triage.id, Triage.draft_attempts).where(col(Triage.id).in_(ids))))
    for triage_id, attempts in rows:
        tid = int(triage_id or 0)
        dead = attempts >= ctx.settings.worker.max_attempts
        backoff = float(2 ** max(attempts, 1))
        with session_scope(ctx.engine) as session:
            session.execute(
                update(Triage)
                .where(col(Triage.id) == tid, col(Triage.draft_status) == DraftStatus.drafting)
                .values(
                    draft_status=DraftStatus.failed if dead else DraftStatus.pending,
                    draft_lease_until=None if dead else now + timedelta(seconds=backoff),
                    draft_error=error,
                )
            )
        if dead:
            report.dead.append(tid)
            metrics().dead_letters.labels(kind="draft", reason="model_error").inc()
        else:
            report.failed.append(tid)
            ctx.enqueue(DRAFT_TASK, tid, backoff)


def _finish(engine: Engine, ids: list[int], status: DraftStatus, *, error: str | None) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Triage)
            .where(col(Triage.id).in_(ids), col(Triage.draft_status) == DraftStatus.drafting)
            .values(draft_status=status, draft_lease_until=None, draft_error=error)
        )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _rows(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
