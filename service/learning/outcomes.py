"""Agents' verdicts on triages: which triages a person reviewed (a decided draft, or a label correction of the ticket
after the triage) and each field's final value (corrections win), for the shadow comparison and the rollback check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, or_
from sqlmodel import Session, col, select

from service.domain.learning import ShadowPrediction
from service.domain.tables import LabelCorrection, Suggestion, Triage
from service.review.feedback import DECIDED, effective_labels, latest_corrections


def _reviewed() -> Any:
    """SQL condition: the triage's draft was decided, or its ticket's labels were corrected after it."""
    decided = exists().where(col(Suggestion.triage_id) == col(Triage.id), col(Suggestion.status).in_(DECIDED))
    corrected = exists().where(
        col(LabelCorrection.ticket_id) == col(Triage.ticket_id),
        col(LabelCorrection.created_at) >= col(Triage.created_at),
    )
    return or_(decided, corrected)


def finals(session: Session, triages: Sequence[Triage]) -> list[dict[str, str | None]]:
    """Each triage's final labels: its predictions overridden by the ticket's latest corrections."""
    corrections = latest_corrections(session, sorted({t.ticket_id for t in triages}))
    return [effective_labels(t, corrections.get(t.ticket_id, {})) for t in triages]


def reviewed_of_version(session: Session, version: str, limit: int) -> list[tuple[Triage, dict[str, str | None]]]:
    """The newest `limit` reviewed triages an adapter version made, with their final labels."""
    rows = list(
        session.exec(
            select(Triage)
            .where(col(Triage.adapter_version) == version, _reviewed())
            .order_by(col(Triage.id).desc())
            .limit(limit)
        ).all()
    )
    return list(zip(rows, finals(session, rows), strict=True))


def reviewed_shadowed(
    session: Session, adapter_id: int, live_version: str, limit: int
) -> list[tuple[Triage, ShadowPrediction, dict[str, str | None]]]:
    """The newest `limit` reviewed triages of the live version that also have the shadow adapter's predictions."""
    rows = list(
        session.exec(
            select(Triage, ShadowPrediction)
            .join(ShadowPrediction, col(ShadowPrediction.triage_id) == col(Triage.id))
            .where(
                col(ShadowPrediction.adapter_id) == adapter_id,
                col(Triage.adapter_version) == live_version,
                _reviewed(),
            )
            .order_by(col(Triage.id).desc())
            .limit(limit)
        ).all()
    )
    final = finals(session, [t for t, _ in rows])
    return [(t, s, f) for (t, s), f in zip(rows, final, strict=True)]


def label_of(predictions: dict[str, Any], field: str) -> str | None:
    """The predicted label of a field in a stored predictions dict."""
    pred = predictions.get(field)
    return pred.get("label") if isinstance(pred, dict) else None
