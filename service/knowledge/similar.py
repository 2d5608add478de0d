"""Similar earlier tickets: what the team decided and answered last time, as evidence beside a prediction.

Candidates come from the ticket full-text index (earlier tickets only); among the best `pool` of them scoring at
least `RELATIVE_FLOOR` of the best one, tickets a person reviewed or that were resolved come first, then by score.
Each carries its final labels (the prediction overridden by corrections) and the reply that was sent. The internal
note names them by key and link only: another customer's text never goes into a note on this ticket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from service.domain.tables import LabelCorrection, Suggestion, SuggestionStatus, Ticket, Triage
from service.knowledge.index import search_tickets
from service.settings import Settings

RESOLVED_STATUSES = frozenset({"resolved", "closed", "done", "completed", "6", "7"})  # SN: 6 Resolved, 7 Closed
_SENT = (SuggestionStatus.approved, SuggestionStatus.delivered, SuggestionStatus.failed)
_DECIDED = (*_SENT, SuggestionStatus.rejected)
QUERY_MAX_CHARS = 4000
# A candidate scoring under this share of the best one only shares a word or two ("morning", a product name):
# relative, because BM25 (SQLite) and ts_rank (PostgreSQL) scores have different scales.
RELATIVE_FLOOR = 0.3
_EPOCH = datetime.min


@dataclass(frozen=True)
class SimilarTicket:
    """An earlier ticket like this one, with its final labels and the reply that was sent."""

    ticket_id: int
    source: str
    key: str
    url: str | None
    subject: str
    score: float
    reviewed: bool
    resolved: bool
    labels: dict[str, str | None] = field(default_factory=dict)
    reply: str | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON form (API)."""
        out = asdict(self)
        out["score"] = round(self.score, 4)
        return out


def ticket_link(ticket: Ticket, settings: Settings | None) -> str | None:
    """The ticket's link into Jira / ServiceNow: its stored URL, else one built from the configured site."""
    if ticket.url and ticket.url.startswith(("https://", "http://")):
        return ticket.url
    if settings is None:
        return None
    if ticket.source == "jira" and settings.jira.base_url:
        return f"{settings.jira.base_url.rstrip('/')}/browse/{ticket.external_key}"
    if ticket.source == "servicenow" and settings.servicenow.instance_url:
        return f"{settings.servicenow.instance_url.rstrip('/')}/nav_to.do?uri=incident.do?sys_id={ticket.external_id}"
    return None


def ticket_language(session: Session, ticket_id: int) -> str | None:
    """The language the model found for a ticket (its newest triage's `language:xx` flag), if any."""
    flags = session.exec(
        select(Triage.flags).where(Triage.ticket_id == ticket_id).order_by(col(Triage.id).desc()).limit(1)
    ).first()
    for flag in flags or []:
        if isinstance(flag, str) and flag.startswith("language:"):
            return flag.split(":", 1)[1] or None
    return None


def similar_tickets(
    session: Session,
    ticket: Ticket,
    *,
    k: int = 3,
    settings: Settings | None = None,
    language: str | None = None,
    pool: int = 20,
) -> list[SimilarTicket]:
    """The `k` most similar earlier tickets (reviewed or resolved first), with final labels and sent replies."""
    if ticket.id is None or k <= 0:
        return []
    from service.review.feedback import effective_labels, latest_corrections  # the review side owns "final"

    language = language or ticket_language(session, ticket.id) or "en"
    text = f"{ticket.subject}\n{ticket.body}"[:QUERY_MAX_CHARS]
    hits = search_tickets(session, text, language=language, before_id=ticket.id, limit=pool)
    if not hits:
        return []
    best = max(score for _, score in hits)
    hits = [(i, score) for i, score in hits if score >= best * RELATIVE_FLOOR]
    ids = [i for i, _ in hits]
    tickets = {t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ids))).all()}
    triages: dict[int, Triage] = {}
    for row in session.exec(select(Triage).where(col(Triage.ticket_id).in_(ids)).order_by(col(Triage.id))).all():
        triages[row.ticket_id] = row  # the newest triage wins
    corrections = latest_corrections(session, ids)
    reviewed = _reviewed(session, ids)
    replies = _sent_replies(session, ids)
    out: list[SimilarTicket] = []
    for ticket_id, score in hits:
        other = tickets.get(ticket_id)
        if other is None:
            continue
        triage = triages.get(ticket_id)
        labels = effective_labels(triage, corrections.get(ticket_id, {})) if triage else {}
        if not triage:
            labels.update(corrections.get(ticket_id, {}))
        out.append(
            SimilarTicket(
                ticket_id=ticket_id,
                source=other.source,
                key=other.external_key,
                url=ticket_link(other, settings),
                subject=other.subject,
                score=score,
                reviewed=ticket_id in reviewed,
                resolved=(other.status or "").strip().lower() in RESOLVED_STATUSES,
                labels=labels,
                reply=replies.get(ticket_id),
            )
        )
    out.sort(key=lambda s: (not (s.reviewed or s.resolved), -s.score, -s.ticket_id))
    return out[:k]


def _reviewed(session: Session, ids: Sequence[int]) -> set[int]:
    """Tickets a person looked at: a decided suggestion or a label correction."""
    decided = session.exec(
        select(Suggestion.ticket_id).where(col(Suggestion.ticket_id).in_(ids), col(Suggestion.status).in_(_DECIDED))
    ).all()
    corrected = session.exec(select(LabelCorrection.ticket_id).where(col(LabelCorrection.ticket_id).in_(ids))).all()
    return set(decided) | set(corrected)


def _sent_replies(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """ticket id -> the reply of its most recently decided sent suggestion."""
    rows = session.exec(
        select(Suggestion.ticket_id, Suggestion.decided_at, Suggestion.id, Suggestion.final_reply).where(
            col(Suggestion.ticket_id).in_(ids), col(Suggestion.status).in_(_SENT)
        )
    ).all()
    out: dict[int, str] = {}
    # Sorted here: SQLite and PostgreSQL put NULL decided_at at opposite ends.
    for ticket_id, _, _, reply in sorted(rows, key=lambda r: (r[1] is not None, r[1] or _EPOCH, r[2] or 0)):
        if reply:
            out[ticket_id] = reply
    return out


def note_lines(similar: Sequence[SimilarTicket]) -> list[str]:
    """The internal note's part: keys and links only (never another customer's text), with final labels."""
    if not similar:
        return []
    lines = ["Similar earlier tickets:"]
    for s in similar:
        labels = ", ".join(f"{v}" for _, v in sorted(s.labels.items()) if v)
        tail = f" ({labels})" if labels else ""
        lines.append(f"- {s.key}{' ' + s.url if s.url else ''}{tail}")
    return lines
