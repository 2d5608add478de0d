"""The rollback check: the live adapter's precision on reviewed tickets over a rolling window against its
predecessor's (the adapter it replaced, over that one's last window while it was live). Significantly lower in any
field (a one-sided two-proportion test at the configured confidence, split over the fields): roll back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session

from service.domain.learning import Adapter
from service.learning import outcomes
from service.learning.stats import field_confidence, proportion_below
from service.settings import LearningSettings


@dataclass
class FieldPrecision:
    """One field's precision for both adapters: right / reviewed, and the test's p-value."""

    field: str
    live_right: int = 0
    live_n: int = 0
    previous_right: int = 0
    previous_n: int = 0
    p_value: float = 1.0  # that the live adapter's precision is not below its predecessor's

    @property
    def live_precision(self) -> float | None:
        """Share of the live adapter's reviewed predictions that were the final value."""
        return self.live_right / self.live_n if self.live_n else None

    @property
    def previous_precision(self) -> float | None:
        """The same for its predecessor."""
        return self.previous_right / self.previous_n if self.previous_n else None


@dataclass
class Check:
    """The verdict on the live adapter: rollback | keep | wait, with the figures."""

    live: str
    previous: str
    confidence: float
    live_reviewed: int = 0
    previous_reviewed: int = 0
    fields: list[FieldPrecision] = field(default_factory=list)
    decision: str = "wait"
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON for the registry row's report."""
        out = asdict(self)
        for f, d in zip(self.fields, out["fields"], strict=True):
            d.update(live_precision=f.live_precision, previous_precision=f.previous_precision)
        return out


def check(session: Session, live: Adapter, previous: Adapter, cfg: LearningSettings) -> Check:
    """Compare the live adapter's precision over its last `rollback_window` reviewed tickets with its predecessor's."""
    names = sorted(set(live.fields) & set(previous.fields))
    out = Check(live.version, previous.version, field_confidence(cfg.rollback_confidence, len(names)))
    mine = outcomes.reviewed_of_version(session, live.version, cfg.rollback_window)
    theirs = outcomes.reviewed_of_version(session, previous.version, cfg.rollback_window)
    out.live_reviewed, out.previous_reviewed = len(mine), len(theirs)
    for name in names:
        fp = FieldPrecision(name)
        for rows, mine_side in ((mine, True), (theirs, False)):
            for triage, final in rows:
                truth = final.get(name)
                if not truth:
                    continue
                hit = int(outcomes.label_of(triage.predictions or {}, name) == truth)
                if mine_side:
                    fp.live_right, fp.live_n = fp.live_right + hit, fp.live_n + 1
                else:
                    fp.previous_right, fp.previous_n = fp.previous_right + hit, fp.previous_n + 1
        fp.p_value = proportion_below(fp.live_right, fp.live_n, fp.previous_right, fp.previous_n)
        out.fields.append(fp)
    out.decision, out.reason = _decide(out, cfg)
    return out


def _decide(c: Check, cfg: LearningSettings) -> tuple[str, str]:
    if c.live_reviewed < cfg.rollback_min_reviewed:
        return "wait", f"{c.live_reviewed} of {cfg.rollback_min_reviewed} reviewed tickets of {c.live} so far"
    if c.previous_reviewed < cfg.rollback_min_reviewed:
        return "keep", f"{c.previous} has only {c.previous_reviewed} reviewed tickets to compare with"
    lines = [
        f"{f.field} precision {f.live_right}/{f.live_n} for {c.live} vs {f.previous_right}/{f.previous_n} for "
        f"{c.previous} (p={f.p_value:.4f})"
        for f in c.fields
        if f.live_n and f.previous_n
    ]
    low = [f.field for f in c.fields if f.p_value < 1 - c.confidence]
    if low:
        return "rollback", f"precision fell significantly below {c.previous}'s in {', '.join(low)}: " + "; ".join(lines)
    return "keep", "; ".join(lines) or "no field to compare"
