"""Automation policy: per field auto-apply / suggest / shadow, plus the gates no threshold can open."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from service.domain.schemas import LabelPrediction
from service.settings import AutomationMode, FieldPolicy

PRIORITY_FIELD = "priority"
IMPACT_FIELD = "impact"
URGENCY_FIELD = "urgency"

# Labels that mean "the highest priority" in the label sets we know (P1..P5, ITIL words, ServiceNow numbers).
HIGHEST_PRIORITY_LABELS = frozenset({"p1", "1", "critical", "highest", "1 - critical"})

# ITIL / ServiceNow default: priority from impact (1 high .. 3 low) x urgency (1 high .. 3 low).
PRIORITY_MATRIX: dict[tuple[int, int], str] = {
    (1, 1): "P1",
    (1, 2): "P2",
    (2, 1): "P2",
    (1, 3): "P3",
    (2, 2): "P3",
    (3, 1): "P3",
    (2, 3): "P4",
    (3, 2): "P4",
    (3, 3): "P5",
}
_LEVEL_WORDS = {"high": 1, "1": 1, "medium": 2, "moderate": 2, "2": 2, "low": 3, "3": 3}


class Decision(StrEnum):
    """What the pipeline does with one predicted field."""

    auto = "auto"  # written to the ITSM tool, recorded as made by the service
    suggest = "suggest"  # listed in the internal note for an agent to apply
    shadow = "shadow"  # stored only; nothing is written anywhere


@dataclass(frozen=True)
class FieldDecision:
    """The decision for one field and why (the reason is stored with the triage and shown in the note)."""

    field: str
    label: str
    confidence: float
    decision: Decision
    reason: str


def level(value: str | None) -> int | None:
    """Impact/urgency label ('1', 'High', '1 - High') as 1..3, or None when it is not one."""
    if value is None:
        return None
    head = value.strip().lower().split(" ", 1)[0].rstrip("-")
    return _LEVEL_WORDS.get(head) or _LEVEL_WORDS.get(value.strip().lower())


def priority_from_impact_urgency(impact: str | None, urgency: str | None) -> str | None:
    """The priority label (P1..P5) the impact x urgency matrix gives, or None when either is unknown."""
    i, u = level(impact), level(urgency)
    if i is None or u is None:
        return None
    return PRIORITY_MATRIX[(i, u)]


def is_highest_priority(label: str | None) -> bool:
    """True for P1 and its synonyms: never auto-applied from ticket text alone."""
    return label is not None and label.strip().lower() in HIGHEST_PRIORITY_LABELS


def decide_fields(
    predictions: Mapping[str, LabelPrediction],
    policies: Mapping[str, FieldPolicy],
    *,
    allow_auto: bool = True,
) -> dict[str, FieldDecision]:
    """Apply each field's policy; `allow_auto=False` (a flagged ticket) turns every auto into a suggestion."""
    impact = predictions.get(IMPACT_FIELD)
    urgency = predictions.get(URGENCY_FIELD)
    implied = priority_from_impact_urgency(impact.label if impact else None, urgency.label if urgency else None)
    out: dict[str, FieldDecision] = {}
    for name, pred in predictions.items():
        policy = policies.get(name, FieldPolicy())
        out[name] = _decide_one(name, pred, policy, allow_auto=allow_auto, implied_priority=implied)
    return out


def _decide_one(
    name: str, pred: LabelPrediction, policy: FieldPolicy, *, allow_auto: bool, implied_priority: str | None
) -> FieldDecision:
    """One field's decision; gates are checked after the threshold so the reason names the gate."""

    def made(decision: Decision, reason: str) -> FieldDecision:
        return FieldDecision(name, pred.label, pred.confidence, decision, reason)

    if policy.mode == AutomationMode.shadow:
        return made(Decision.shadow, "shadow mode")
    if policy.mode == AutomationMode.suggest:
        return made(Decision.suggest, "suggest mode")
    if pred.confidence < policy.threshold:
        return made(Decision.suggest, f"confidence {pred.confidence:.2f} < threshold {policy.threshold:.2f}")
    # Ticket text must never be able to raise a ticket to the top priority by itself (LLM01 gate).
    if name == PRIORITY_FIELD and is_highest_priority(pred.label):
        return made(Decision.suggest, "highest priority is never auto-applied")
    if name in (IMPACT_FIELD, URGENCY_FIELD) and is_highest_priority(implied_priority):
        return made(Decision.suggest, "impact x urgency gives the highest priority; never auto-applied")
    if not allow_auto:
        return made(Decision.suggest, "ticket flagged; auto-apply disabled")
    return made(Decision.auto, f"confidence {pred.confidence:.2f} >= threshold {policy.threshold:.2f}")
