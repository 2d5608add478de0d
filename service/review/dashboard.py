"""Dashboard figures: acceptance rate, edit rate and per-field precision of predictions vs final values, per day.

Fields in shadow mode (stored, never written) get their own precision, overall and among predictions at or above the
field's threshold: the figure an operator reads before raising a field to suggest or auto.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlmodel import Session, col, select

from service.domain.tables import Suggestion, Triage
from service.review.feedback import DECIDED, SENT, effective_labels, latest_corrections
from service.settings import FieldPolicy


@dataclass
class DayStats:
    """One day's review outcomes."""

    day: date
    decided: int = 0
    sent: int = 0
    edited: int = 0
    field_total: dict[str, int] = field(default_factory=dict)
    field_correct: dict[str, int] = field(default_factory=dict)
    shadow_total: dict[str, int] = field(default_factory=dict)  # reviewed predictions made in shadow mode
    shadow_correct: dict[str, int] = field(default_factory=dict)
    shadow_confident: dict[str, int] = field(default_factory=dict)  # ... at or above the field's threshold
    shadow_confident_correct: dict[str, int] = field(default_factory=dict)
    recorded: int = 0  # decided drafts whose sources were recorded (Suggestion.sources not null)
    recorded_sent: int = 0
    grounded: int = 0  # ... that cite at least one knowledge-base passage
    grounded_sent: int = 0

    @property
    def source_share(self) -> float | None:
        """Share of decided drafts (with sources recorded) that cite a knowledge-base article."""
        return self.grounded / self.recorded if self.recorded else None

    @property
    def acceptance_with_source(self) -> float | None:
        """Acceptance rate of drafts that cite an article."""
        return self.grounded_sent / self.grounded if self.grounded else None

    @property
    def acceptance_without_source(self) -> float | None:
        """Acceptance rate of drafts (with sources recorded) that cite none."""
        ungrounded = self.recorded - self.grounded
        return (self.recorded_sent - self.grounded_sent) / ungrounded if ungrounded else None

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

    def shadow_precision(self, name: str) -> float | None:
        """Share of reviewed shadow-mode predictions of `name` that equal its final value."""
        total = self.shadow_total.get(name, 0)
        return self.shadow_correct.get(name, 0) / total if total else None

    def shadow_confident_precision(self, name: str) -> float | None:
        """The same among predictions at or above the threshold: what auto mode would have written."""
        total = self.shadow_confident.get(name, 0)
        return self.shadow_confident_correct.get(name, 0) / total if total else None

    def shadow_coverage(self, name: str) -> float | None:
        """Share of shadow predictions at or above the threshold (how much auto mode would have done)."""
        total = self.shadow_total.get(name, 0)
        return self.shadow_confident.get(name, 0) / total if total else None


@dataclass
class Stats:
    """Per-day stats over a window plus the window's totals."""

    days: list[DayStats]
    fields: list[str]
    shadow_fields: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> DayStats:
        """All days summed into one."""
        out = DayStats(day=self.days[-1].day if self.days else date.today())
        for d in self.days:
            out.decided += d.decided
            out.sent += d.sent
            out.edited += d.edited
            out.recorded += d.recorded
            out.recorded_sent += d.recorded_sent
            out.grounded += d.grounded
            out.grounded_sent += d.grounded_sent
            for name in self.fields:
                for mine, theirs in (
                    (out.field_total, d.field_total),
                    (out.field_correct, d.field_correct),
                    (out.shadow_total, d.shadow_total),
                    (out.shadow_correct, d.shadow_correct),
                    (out.shadow_confident, d.shadow_confident),
                    (out.shadow_confident_correct, d.shadow_confident_correct),
                ):
                    mine[name] = mine.get(name, 0) + theirs.get(name, 0)
        return out


def _bump(counts: dict[str, int], name: str, by: int = 1) -> None:
    counts[name] = counts.get(name, 0) + by


def compute(
    session: Session,
    *,
    days: int = 30,
    today: date | None = None,
    policy: Mapping[str, FieldPolicy] | None = None,
) -> Stats:
    """Stats of drafts decided in the last `days` days; a reviewed ticket's corrections are its final labels.

    `policy` gives each field's threshold for the shadow figures (unlisted fields: the default policy's).
    """
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
    shadow_names: set[str] = set()
    thresholds = {name: p.threshold for name, p in (policy or {}).items()}
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
        if sug.sources is not None:
            cites = any(isinstance(x, dict) and x.get("kind", "kb") == "kb" for x in sug.sources)
            day.recorded += 1
            day.recorded_sent += int(sug.status in SENT)
            day.grounded += int(cites)
            day.grounded_sent += int(cites and sug.status in SENT)
        final = effective_labels(triage, corrections.get(sug.ticket_id, {}))
        for name, pred in (triage.predictions or {}).items():
            names.add(name)
            day.field_total[name] = day.field_total.get(name, 0) + 1
            hit = (pred or {}).get("label") == final.get(name)
            day.field_correct[name] = day.field_correct.get(name, 0) + int(hit)
            decision = (triage.decisions or {}).get(name)
            mode = decision.get("decision") if isinstance(decision, dict) else decision
            if mode == "shadow":
                shadow_names.add(name)
                _bump(day.shadow_total, name)
                _bump(day.shadow_correct, name, int(hit))
                confidence = float((pred or {}).get("confidence") or 0.0)
                if confidence >= thresholds.setdefault(name, FieldPolicy().threshold):
                    _bump(day.shadow_confident, name)
                    _bump(day.shadow_confident_correct, name, int(hit))
        totals[day.day] = day.field_total
    return Stats(
        days=[by_day[d] for d in sorted(by_day)],
        fields=sorted(names),
        shadow_fields=sorted(shadow_names),
        thresholds=thresholds,
    )
