"""Training signal from review: edit distance, effective (corrected) labels, and the export-training rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from service.domain.tables import LabelCorrection, Suggestion, SuggestionStatus, Ticket, Triage

# Beyond this many DP cells a full Levenshtein would stall a request; the length bound is then close to exact.
_MAX_CELLS = 4_000_000
DECIDED = (
    SuggestionStatus.approved,
    SuggestionStatus.delivered,
    SuggestionStatus.failed,
    SuggestionStatus.rejected,
)
TEXT_COLUMNS = frozenset({"id", "subject", "body", "reply"})
SENT = (SuggestionStatus.approved, SuggestionStatus.delivered, SuggestionStatus.failed)
# Ticket ids per IN (...) list: well under SQLite's bound-parameter limit, few round trips for a large export.
_CHUNK = 500
_EPOCH = datetime.min


def edit_distance(a: str, b: str) -> int:
    """Character Levenshtein distance between the draft and the sent reply (0 = sent unedited)."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a, end_b = end_a - 1, end_b - 1
    a, b = a[start:end_a], b[start:end_b]
    if not a or not b:
        return max(len(a), len(b))
    if len(a) * len(b) > _MAX_CELLS:
        return max(len(a), len(b))  # a near-total rewrite: the upper bound is the honest figure
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def latest_corrections(session: Session, ticket_ids: list[int]) -> dict[int, dict[str, str | None]]:
    """ticket id -> field -> the newest corrected value (from the ITSM tool or from review)."""
    out: dict[int, dict[str, str | None]] = {}
    if not ticket_ids:
        return out
    rows = session.exec(
        select(LabelCorrection)
        .where(col(LabelCorrection.ticket_id).in_(ticket_ids))
        .order_by(col(LabelCorrection.created_at), col(LabelCorrection.id))
    ).all()
    for row in rows:
        out.setdefault(row.ticket_id, {})[row.field] = row.new_value
    return out


def effective_labels(triage: Triage, corrections: dict[str, str | None]) -> dict[str, str | None]:
    """Predicted labels overridden by corrections: what the ticket's fields finally are."""
    labels: dict[str, str | None] = {
        field: (pred or {}).get("label") for field, pred in (triage.predictions or {}).items()
    }
    labels.update(corrections)
    return labels


def training_rows(session: Session, *, since: datetime) -> Iterator[dict[str, Any]]:
    """One row per ticket with human feedback since `since`, in the model's training format.

    Only tickets a person looked at are exported (a decided suggestion or a label correction): training on the
    model's own unreviewed predictions would only teach it its mistakes. Tickets are read in chunks with a fixed
    number of queries each, so a worker's first memory poll over tens of thousands of reviews stays fast.
    """
    decided = select(Suggestion.ticket_id).where(
        col(Suggestion.status).in_(DECIDED), col(Suggestion.decided_at) >= since
    )
    corrected = select(LabelCorrection.ticket_id).where(col(LabelCorrection.created_at) >= since)
    ids = [
        i
        for i in session.exec(
            select(Ticket.id)
            .where(or_(col(Ticket.id).in_(decided), col(Ticket.id).in_(corrected)))
            .order_by(col(Ticket.id))
        ).all()
        if i is not None
    ]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        tickets = session.exec(select(Ticket).where(col(Ticket.id).in_(chunk)).order_by(col(Ticket.id))).all()
        triages = _latest_triages(session, chunk)
        replies = _latest_sent_replies(session, chunk)
        corrections = latest_corrections(session, chunk)
        for ticket in tickets:
            assert ticket.id is not None
            if not ticket.subject and not ticket.body:
                continue  # text purged by retention: nothing to learn, and its id must stay forgotten
            triage = triages.get(ticket.id)
            labels = effective_labels(triage, {}) if triage else {}
            labels.update(corrections.get(ticket.id, {}))
            row: dict[str, Any] = {
                "id": f"{ticket.source}:{ticket.external_key}",
                "subject": ticket.subject,
                "body": ticket.body,
            }
            # A label field can never overwrite the text columns the trainer reads.
            row.update({f: label for f, label in sorted(labels.items()) if label is not None and f not in TEXT_COLUMNS})
            row["reply"] = replies.get(ticket.id)
            yield row


def _latest_triages(session: Session, ticket_ids: list[int]) -> dict[int, Triage]:
    """ticket id -> its newest triage (a re-triaged ticket's latest predictions are what a person saw)."""
    out: dict[int, Triage] = {}
    for triage in session.exec(
        select(Triage).where(col(Triage.ticket_id).in_(ticket_ids)).order_by(col(Triage.id))
    ).all():
        out[triage.ticket_id] = triage
    return out


def _latest_sent_replies(session: Session, ticket_ids: list[int]) -> dict[int, str | None]:
    """ticket id -> the reply of its most recently decided sent suggestion."""
    rows = session.exec(
        select(Suggestion.ticket_id, Suggestion.decided_at, Suggestion.id, Suggestion.final_reply).where(
            col(Suggestion.ticket_id).in_(ticket_ids), col(Suggestion.status).in_(SENT)
        )
    ).all()
    # Sorted here rather than in SQL: SQLite and PostgreSQL place NULL decided_at at opposite ends.
    out: dict[int, str | None] = {}
    for ticket_id, _, _, reply in sorted(rows, key=lambda r: (r[1] is not None, r[1] or _EPOCH, r[2] or 0)):
        out[ticket_id] = reply
    return out


def write_jsonl(rows: Iterator[dict[str, Any]], out: IO[str]) -> int:
    """Write rows as JSON lines; returns how many were written."""
    n = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n
