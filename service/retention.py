"""Erasure of one person's or one ticket's data, and the retention purge of raw payloads and closed tickets' text.

Both run in one transaction each and append an `Erasure` row that the triage workers follow to forget the
tickets from their ticket memory, plus one audit row. Audit rows never hold ticket text (service.review.actions
writes digests), so the append-only audit log stays untouched and still shows who erased what and when.
Rows to erase are found through the foreign keys of the metadata, so a table added later that points at a ticket
(or at one of its events, triages, suggestions) is erased with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

import service.domain.tables  # noqa: F401  (registers every table on the metadata walked below)
from service.domain.privacy import Erasure, memory_id, reporter_digest
from service.domain.tables import AuditEntry, Delivery, InboundEvent, Suggestion, Ticket, Triage, utcnow
from service.ingest import write_lock
from service.settings import Settings

log = structlog.get_logger(__name__)

PURGED_FLAG = "text_purged"
RETENTION_BATCH = 500  # tickets per transaction: a first run over years of history does not hold one long lock
_T = Ticket.__table__  # type: ignore[attr-defined]
_E = InboundEvent.__table__  # type: ignore[attr-defined]


@dataclass
class ErasureReport:
    """What one erasure removed (row counts per table) and which ticket-memory ids the workers will forget."""

    tickets: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    memory_ids: list[str] = field(default_factory=list)
    erasure_id: int | None = None


def find_tickets(conn: Connection, *, reporter: str | None = None, ticket: str | None = None) -> list[Any]:
    """Tickets of a reporter (account id / caller as stored, or e-mail via its digest) or one ticket by key or id."""
    if reporter:
        digest = reporter_digest(reporter)
        cond = or_(func.lower(_T.c.reporter) == reporter.strip().lower(), _T.c.reporter_digest == digest)
    elif ticket:
        source, sep, key = ticket.strip().partition(":")
        if not sep or not source.isalpha():  # "jira:ITSD-42" names the source; a bare key or id matches any
            source, key = "", ticket.strip()
        cond = or_(_T.c.external_key == key, _T.c.external_id == key)
        if source:
            cond = cond & (_T.c.source == source)
    else:
        raise ValueError("name a reporter or a ticket")
    return list(conn.execute(select(_T.c.id, _T.c.source, _T.c.external_key, _T.c.external_id).where(cond)).all())


def _dependents(conn: Connection, roots: dict[str, set[Any]]) -> dict[Table, set[Any]]:
    """Primary keys of every row that points, through foreign keys, at the given rows (parents first)."""
    found: dict[Table, set[Any]] = {}
    by_name = dict(roots)
    for table in SQLModel.metadata.sorted_tables:
        ids = set(roots.get(table.name, ()))
        conds = [
            fk.parent.in_(sorted(by_name[fk.column.table.name]))
            for fk in table.foreign_keys
            if fk.column.table.name != table.name and by_name.get(fk.column.table.name)
        ]
        pk = list(table.primary_key.columns)
        if conds and len(pk) == 1:
            ids |= set(conn.execute(select(pk[0]).where(or_(*conds))).scalars())
        if ids:
            found[table] = ids
            by_name[table.name] = ids
    return found


def erase(engine: Engine, *, actor: str, reporter: str | None = None, ticket: str | None = None) -> ErasureReport:
    """Delete every row of the matching tickets (events, triages, suggestions, deliveries, corrections, ...)."""
    report = ErasureReport()
    with write_lock(engine), engine.begin() as conn:
        tickets = find_tickets(conn, reporter=reporter, ticket=ticket)
        ids = {t.id for t in tickets}
        report.tickets = len(ids)
        report.memory_ids = sorted({memory_id(t.source, t.external_key) for t in tickets})
        if ids:
            # Events of these tickets stored before the ticket row was linked (same source and external id).
            keys = [(t.source, t.external_id) for t in tickets]
            orphan = select(_E.c.id).where(
                or_(*[(_E.c.source == s) & (_E.c.external_id == x) for s, x in keys]), _E.c.ticket_id.is_(None)
            )
            found = _dependents(conn, {"ticket": ids, "inbound_event": set(conn.execute(orphan).scalars())})
            for table in reversed(SQLModel.metadata.sorted_tables):
                rows = found.get(table)
                if rows:
                    pk = next(iter(table.primary_key.columns))
                    for chunk in _chunks(sorted(rows)):
                        conn.execute(delete(table).where(pk.in_(chunk)))
                    report.counts[table.name] = len(rows)
        report.erasure_id = _log_erasure(conn, "request", report.memory_ids, report.counts)
        target_type, target_id = (
            ("reporter", f"sha256:{reporter_digest(reporter)}") if reporter else ("ticket", str(ticket)[:200])
        )
        conn.execute(
            AuditEntry.__table__.insert(),  # type: ignore[attr-defined]
            {
                "at": utcnow(),
                "actor": actor[:200],
                "action": "erased",
                "target_type": target_type,
                "target_id": target_id,
                "before": None,
                "after": {"tickets": report.tickets, "rows": report.counts, "erasure_id": report.erasure_id},
            },
        )
    log.info("data_erased", tickets=report.tickets, rows=sum(report.counts.values()), erasure_id=report.erasure_id)
    return report


@dataclass
class RetentionReport:
    """What one retention run cleared."""

    payloads: int = 0
    tickets: int = 0
    erasure_ids: list[int] = field(default_factory=list)


def purge_expired(engine: Engine, settings: Settings, *, now: datetime | None = None) -> RetentionReport:
    """Raw payloads past `payload_retention_days`; texts of tickets closed longer than `closed_text_retention_days`."""
    now = now or utcnow()
    p = settings.privacy
    report = RetentionReport()
    with write_lock(engine), engine.begin() as conn:
        cutoff = now - timedelta(days=p.payload_retention_days)
        result = conn.execute(update(_E).where(_E.c.payload != "", _E.c.received_at < cutoff).values(payload=""))
        report.payloads = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if p.closed_text_retention_days > 0:
        closed = [s.strip().lower() for s in p.closed_statuses if s.strip()]
        cutoff = now - timedelta(days=p.closed_text_retention_days)
        while True:
            done, erasure_id = _purge_closed_batch(engine, closed, cutoff)
            report.tickets += done
            if erasure_id is not None:
                report.erasure_ids.append(erasure_id)
            if done < RETENTION_BATCH:
                break
    if report.payloads or report.tickets:
        log.info("retention_applied", payloads=report.payloads, tickets=report.tickets)
    return report


def _purge_closed_batch(engine: Engine, closed: list[str], cutoff: datetime) -> tuple[int, int | None]:
    """Blank one batch of closed tickets' texts (ticket, triage draft, suggestion, reply deliveries)."""
    with write_lock(engine), engine.begin() as conn:
        rows = conn.execute(
            select(_T.c.id, _T.c.source, _T.c.external_key, _T.c.flags)
            .where(
                func.lower(_T.c.status).in_(closed),
                _T.c.updated_at < cutoff,
                or_(_T.c.subject != "", _T.c.body != "", _T.c.reporter.is_not(None)),
            )
            .limit(RETENTION_BATCH)
        ).all()
        if not rows:
            return 0, None
        ids = [r.id for r in rows]
        for r in rows:
            flags = sorted(set(r.flags or []) | {PURGED_FLAG})
            conn.execute(
                update(_T).where(_T.c.id == r.id).values(subject="", body="", reporter=None, extra={}, flags=flags)
            )
        conn.execute(update(Triage.__table__).where(Triage.__table__.c.ticket_id.in_(ids)).values(draft_reply=None))  # type: ignore[attr-defined]
        s = Suggestion.__table__  # type: ignore[attr-defined]
        conn.execute(update(s).where(s.c.ticket_id.in_(ids)).values(draft="", final_reply=None, reason=None))
        d = Delivery.__table__  # type: ignore[attr-defined]
        for row_id, payload in conn.execute(select(d.c.id, d.c.payload).where(d.c.ticket_id.in_(ids))).all():
            if isinstance(payload, dict) and ({"public_reply", "note"} & payload.keys()):
                kept = {k: v for k, v in payload.items() if k not in ("public_reply", "note")}
                conn.execute(update(d).where(d.c.id == row_id).values(payload={**kept, "purged": True}))
        memory_ids = sorted({memory_id(r.source, r.external_key) for r in rows})
        erasure_id = _log_erasure(conn, "retention", memory_ids, {"tickets": len(rows)})
        conn.execute(
            AuditEntry.__table__.insert(),  # type: ignore[attr-defined]
            {
                "at": utcnow(),
                "actor": "retention",
                "action": "text_purged",
                "target_type": "tickets",
                "target_id": str(len(rows)),
                "before": None,
                "after": {"tickets": len(rows), "erasure_id": erasure_id, "closed_before": cutoff.isoformat()},
            },
        )
    return len(rows), erasure_id


def _log_erasure(conn: Connection, reason: str, memory_ids: list[str], counts: dict[str, Any]) -> int:
    """Append the erasure-log row the workers poll; returns its id."""
    table = Erasure.__table__  # type: ignore[attr-defined]
    result = conn.execute(
        table.insert().returning(table.c.id),
        {"at": utcnow(), "reason": reason, "memory_ids": memory_ids, "counts": counts},
    )
    return int(result.scalar_one())


def _chunks(ids: list[Any], size: int = 500) -> list[list[Any]]:
    """IN lists well under SQLite's bound-parameter limit."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]
