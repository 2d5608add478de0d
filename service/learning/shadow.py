"""The shadow comparison: on reviewed tickets both the live and the shadow adapter predicted, which of them agreed
with the agents' final values, field by field; promote the shadow when it is better, retire it when it is worse or
not better after enough reviews, else wait.

The test is paired (the same tickets): an exact one-sided McNemar test on the tickets only one of them got right,
at the gate's confidence split over the fields (stats.field_confidence).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session

from service.domain.learning import Adapter
from service.learning import outcomes
from service.learning.stats import field_confidence, paired_better
from service.settings import LearningSettings


@dataclass
class FieldVerdicts:
    """One field: how often each adapter matched the final value, and the paired test."""

    field: str
    n: int = 0
    live_right: int = 0
    shadow_right: int = 0
    only_shadow: int = 0  # shadow right, live wrong
    only_live: int = 0
    p_better: float = 1.0  # p-value that the shadow is not better
    p_worse: float = 1.0  # p-value that the shadow is not worse

    @property
    def live_precision(self) -> float | None:
        """Share of reviewed tickets where the live adapter's label was the final one."""
        return self.live_right / self.n if self.n else None

    @property
    def shadow_precision(self) -> float | None:
        """The same for the shadow adapter."""
        return self.shadow_right / self.n if self.n else None


@dataclass
class Comparison:
    """The shadow adapter against the live one on agents' verdicts, and what to do about it."""

    shadow: str
    live: str
    reviewed: int
    confidence: float
    fields: list[FieldVerdicts] = field(default_factory=list)
    decision: str = "wait"  # promote | retire | wait
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON for the registry row's report."""
        out = asdict(self)
        for f, d in zip(self.fields, out["fields"], strict=True):
            d.update(live_precision=f.live_precision, shadow_precision=f.shadow_precision)
        return out


def compare(session: Session, shadow: Adapter, live: Adapter, cfg: LearningSettings) -> Comparison:
    """Compare the shadow adapter with the live one on the reviewed tickets both predicted (newest first)."""
    rows = outcomes.reviewed_shadowed(session, shadow.id or 0, live.version, cfg.shadow_max_reviewed)
    names = sorted(set(shadow.fields) & set(live.fields))
    conf = field_confidence(cfg.gate_confidence, len(names))
    out = Comparison(shadow.version, live.version, len(rows), conf)
    for name in names:
        v = FieldVerdicts(name)
        for triage, pred, final in rows:
            truth = final.get(name)
            if not truth:
                continue
            live_ok = outcomes.label_of(triage.predictions or {}, name) == truth
            shadow_ok = outcomes.label_of(pred.predictions or {}, name) == truth
            v.n += 1
            v.live_right += int(live_ok)
            v.shadow_right += int(shadow_ok)
            v.only_shadow += int(shadow_ok and not live_ok)
            v.only_live += int(live_ok and not shadow_ok)
        v.p_better = paired_better(v.only_shadow, v.only_live)
        v.p_worse = paired_better(v.only_live, v.only_shadow)
        out.fields.append(v)
    out.decision, out.reason = _decide(out, cfg)
    return out


def _decide(c: Comparison, cfg: LearningSettings) -> tuple[str, str]:
    alpha = 1 - c.confidence
    if c.reviewed < cfg.shadow_min_reviewed:
        return "wait", f"{c.reviewed} of {cfg.shadow_min_reviewed} reviewed shadow tickets so far"
    lines = [
        f"{f.field} {f.live_right}/{f.n} -> {f.shadow_right}/{f.n} right ({f.only_shadow} only by {c.shadow}, "
        f"{f.only_live} only by {c.live})"
        for f in c.fields
    ]
    worse = [f.field for f in c.fields if f.p_worse < alpha]
    better = [f.field for f in c.fields if f.p_better < alpha]
    summary = "; ".join(lines)
    if worse:
        return "retire", f"worse than {c.live} on agents' final values in {', '.join(worse)}: {summary}"
    if better:
        return "promote", f"better than {c.live} on agents' final values in {', '.join(better)}: {summary}"
    if c.reviewed >= cfg.shadow_max_reviewed:
        return "retire", f"not better than {c.live} after {c.reviewed} reviewed tickets: {summary}"
    return "wait", f"not decided yet ({c.confidence:.1%} confidence): {summary}"
