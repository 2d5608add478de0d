"""Read side of review: the filtered, paged queue and one suggestion with its ticket, triage and history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from service.domain.tables import (
    Delivery,
    DraftStatus,
    LabelCorrection,
    Suggestion,
    SuggestionStatus,
    Ticket,
    Triage,
)
from service.review.auth import ReviewError
from service.review.feedback import effective_labels, latest_corrections

STATUSES = [s.value for s in SuggestionStatus]


@dataclass
class QueueFilters:
    """What the queue can be narrowed to; confidence bounds apply to `field` (any field when unset)."""

    source: str | None = None
    status: str | None = None
    field: str | None = None
    value: str | None = None
    min_conf: float | None = None
    max_conf: float | None = None

    def as_query(self) -> dict[str, str]:
        """The filters as URL query parameters (for paging links)."""
        return {k: str(v) for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass
class QueueItem:
    """One row of the queue."""

    suggestion: Suggestion
    ticket: Ticket
    predictions: dict[str, Any]


@dataclass
class QueuePage:
    """A page of the queue with its totals."""

    items: list[QueueItem]
    total: int
    page: int
    per_page: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """How many pages the filtered queue has (at least 1)."""
        return max(1, -(-self.total // self.per_page))


def _filtered(query: Any, filters: QueueFilters, *, with_status: bool) -> Any:
    if filters.source:
        query = query.where(col(Ticket.source) == filters.source)
    if with_status and filters.status:
        query = query.where(col(Suggestion.status) == filters.status)
    if filters.field:
        pred = col(Triage.predictions)[filters.field]
        if filters.value:
            query = query.where(pred["label"].as_string() == filters.value)
        if filters.min_conf is not None:
            query = query.where(pred["confidence"].as_float() >= filters.min_conf)
        if filters.max_conf is not None:
            query = query.where(pred["confidence"].as_float() <= filters.max_conf)
    return query


def queue(session: Session, filters: QueueFilters, *, page: int = 1, per_page: int = 25) -> QueuePage:
    """Suggestions newest first under the filters, one page of them, with counts per status."""
    base = (
        select(Suggestion, Ticket, Triage)
        .join(Ticket, col(Ticket.id) == col(Suggestion.ticket_id))
        .join(Triage, col(Triage.id) == col(Suggestion.triage_id))
    )
    rows = session.exec(  # type: ignore[call-overload]
        _filtered(base, filters, with_status=True)
        .order_by(col(Suggestion.created_at).desc(), col(Suggestion.id).desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    counted = (
        select(col(Suggestion.status), func.count())
        .join(Ticket, col(Ticket.id) == col(Suggestion.ticket_id))
        .join(Triage, col(Triage.id) == col(Suggestion.triage_id))
        .group_by(col(Suggestion.status))
    )
    counts = {s: 0 for s in STATUSES}
    for status, n in session.exec(_filtered(counted, filters, with_status=False)).all():  # type: ignore[call-overload]
        counts[status] = int(n)
    total = counts.get(filters.status, 0) if filters.status else sum(counts.values())
    items = [QueueItem(s, t, tr.predictions or {}) for s, t, tr in rows]
    return QueuePage(items=items, total=total, page=page, per_page=per_page, counts=counts)


# Triages whose reply suggestion is not there yet: being drafted, waiting for a draft worker, or given up on.
PREPARING = (DraftStatus.pending, DraftStatus.drafting, DraftStatus.failed)
PREPARING_SHOWN = 50


@dataclass
class PreparingItem:
    """A ticket whose labels are out and whose draft is still being prepared (or failed)."""

    triage: Triage
    ticket: Ticket


def preparing(
    session: Session, filters: QueueFilters, *, limit: int = PREPARING_SHOWN
) -> tuple[list[PreparingItem], int]:
    """Triages (newest first, at most `limit`) whose draft is pending, drafting or failed, and how many there are."""
    base = (
        select(Triage, Ticket)
        .join(Ticket, col(Ticket.id) == col(Triage.ticket_id))
        .where(col(Triage.draft_status).in_(PREPARING))
    )
    filtered = _filtered(base, QueueFilters(**{**filters.__dict__, "status": None}), with_status=False)
    rows = session.exec(filtered.order_by(col(Triage.id).desc()).limit(limit)).all()  # type: ignore[call-overload]
    counted = _filtered(
        select(func.count()).select_from(Triage).join(Ticket, col(Ticket.id) == col(Triage.ticket_id))
        .where(col(Triage.draft_status).in_(PREPARING)),
        QueueFilters(**{**filters.__dict__, "status": None}),
        with_status=False,
    )  # fmt: skip
    total = int(session.exec(counted).one())  # type: ignore[call-overload]
    return [PreparingItem(t, k) for t, k in rows], total


def known_fields(session: Session) -> list[str]:
    """Predicted field names seen in recent triages (for the filter form)."""
    names: set[str] = set()
    for preds in session.exec(select(Triage.predictions).order_by(col(Triage.id).desc()).limit(200)).all():
        names.update((preds or {}).keys())
    return sorted(names)


def sources(session: Session) -> list[str]:
    """Ticket sources present in the database."""
    return sorted(session.exec(select(Ticket.source).distinct()).all())


@dataclass
class SuggestionView:
    """Everything the ticket page and GET /api/v1/suggestions/{id} show."""

    suggestion: Suggestion
    ticket: Ticket
    triage: Triage
    labels: dict[str, str | None]
    corrections: list[LabelCorrection]
    deliveries: list[Delivery]

    def decision(self, field_name: str) -> tuple[str | None, str | None]:
        """What the pipeline did with a field (auto / suggest / shadow / unmapped) and why."""
        return decision_of(self.triage, field_name)

    def options(self, field_name: str) -> list[tuple[str, float]]:
        """A field's labels with their probabilities, most likely first."""
        probs = (self.triage.predictions.get(field_name) or {}).get("probabilities") or {}
        return sorted(((str(k), float(v)) for k, v in probs.items()), key=lambda kv: -kv[1])

    def draft_warnings(self) -> list[str]:
        """Grounding flags of the draft (unsupported_link, ...): what was removed from it as unbacked."""
        flags = set(self.triage.flags or []) | set(getattr(self.suggestion, "flags", None) or [])
        return sorted(f for f in flags if f.startswith("unsupported_"))


def suggestion_view(session: Session, suggestion_id: int) -> SuggestionView:
    """Load one suggestion with its ticket, triage, corrections and deliveries (404 when unknown)."""
    sug = session.get(Suggestion, suggestion_id)
    if sug is None:
        raise ReviewError(404, "not_found", "No suggestion with this id.")
    ticket = session.get(Ticket, sug.ticket_id)
    triage = session.get(Triage, sug.triage_id)
    if ticket is None or triage is None:
        raise ReviewError(404, "not_found", "The suggestion's ticket is gone.")
    corrections = list(
        session.exec(
            select(LabelCorrection).where(LabelCorrection.ticket_id == ticket.id).order_by(col(LabelCorrection.id))
        ).all()
    )
    deliveries = list(
        session.exec(select(Delivery).where(Delivery.ticket_id == ticket.id).order_by(col(Delivery.id))).all()
    )
    assert ticket.id is not None
    labels = effective_labels(triage, latest_corrections(session, [ticket.id]).get(ticket.id, {}))
    return SuggestionView(sug, ticket, triage, labels, corrections, deliveries)


def decision_of(triage: Triage, field_name: str) -> tuple[str | None, str | None]:
    """A field's policy decision and reason; the pipeline stores {"decision", "reason"}, older rows a bare string."""
    raw = (triage.decisions or {}).get(field_name)
    if isinstance(raw, dict):
        return (str(raw["decision"]) if raw.get("decision") else None), raw.get("reason")
    return (str(raw) if raw else None), None
