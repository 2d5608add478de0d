"""Dashboard figures: acceptance rate, edit rate and per-field precision of predictions vs final values, per day."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlmodel import Session, col, select

from service.domain.tables import Suggestion, Triage
from service.review.feedback import DECIDED, SENT, effective_labels, latest_corrections


@dataclass
class DayStats:
    """One day's review outcomes."""

    day: date
    decided: int = 0
    sent: int = 0
    edited: int = 0
    field_total: dict[str, int] = field(default_factory=dict)
    field_correct: dict[str, int] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float | None:
        """Share of decided drafts that were sent (edited or not)."""
        return self.sent / self.decided if self.decided else None

    @property
    def edit_rate(self) -> float | None:
        """Share of sent drafts that an agent edited first."""
        return self.edited / self.sent if self.sent else None

    def precision(self, name: str) -> float | None:
        """Share of reviewed predictions of `name` that equal its final value."""
        total = self.field_total.get(name, 0)
        return self.field_correct.get(name, 0) / total if total else None


@dataclass
class Stats:
    """Per-day stats over a window plus the window's totals."""

    days: list[DayStats]
    fields: list[str]

    @property
    def total(self) -> DayStats:
        """All days summed into one."""
        out = DayStats(day=self.days[-1].day if self.days else date.today())
        for d in self.days:
            out.decided += d.decided
            out.sent += d.sent
            out.edited += d.edited
            for name in self.fields:
                out.field_total[name] = out.field_total.get(name, 0) + d.field_total.get(name, 0)
                out.field_correct[name] = out.field_correct.get(name, 0) + d.field_correct.get(name, 0)
        return out


def compute(session: Session, *, days: int = 30, today: date | None = None) -> Stats:
    """Stats of drafts decided in the last `days` days; a reviewed ticket's corrections are its final labels."""
    end = today or datetime.now(UTC).date()
    start = end - timedelta(days=days - 1)
    since = datetime(start.year, start.month, start.day, tzinfo=UTC)
    rows = session.exec(
        select(Suggestion, Triage)
        .join(Triage, col(Triage.id) == col(Suggestion.triage_id))
        .where(col(Suggestion.status).in_(DECIDED), col(Suggestion.decided_at) >= since)
    ).all()
    corrections = latest_corrections(session, sorted({s.ticket_id for s, _ in rows}))
    by_day: dict[date, DayStats] = {start + timedelta(days=i): DayStats(start + timedelta(days=i)) for i in range(days)}
    names: set[str] = set()
    totals: dict[date, dict[str, int]] = defaultdict(dict)
    for sug, triage in rows:
        assert sug.decided_at is not None
        day = by_day.get(sug.decided_at.date())
        if day is None:
            continue
        day.decided += 1
        if sug.status in SENT:
            day.sent += 1
            day.edited += int((sug.edit_distance or 0) > 0)
        final = effective_labels(triage, corrections.get(sug.ticket_id, {}))
        for name, pred in (triage.predictions or {}).items():
            names.add(name)
            day.field_total[name] = day.field_total.get(name, 0) + 1
            hit = (pred or {}).get("label") == final.get(name)
            day.field_correct[name] = day.field_correct.get(name, 0) + int(hit)
        totals[day.day] = day.field_total
    return Stats(days=[by_day[d] for d in sorted(by_day)], fields=sorted(names))
