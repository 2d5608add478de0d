"""The automation policy: thresholds, modes, and the gates no threshold opens."""

from __future__ import annotations

import pytest

from service.domain.policy import Decision, decide_fields, priority_from_impact_urgency
from service.domain.schemas import LabelPrediction
from service.settings import FieldPolicy


def pred(label: str, confidence: float) -> LabelPrediction:
    return LabelPrediction(label=label, confidence=confidence, probabilities={label: confidence})


AUTO = FieldPolicy(mode="auto", threshold=0.8)


def test_auto_applies_only_at_or_above_threshold() -> None:
    out = decide_fields(
        {"queue": pred("Billing", 0.8), "category": pred("NETWORK", 0.79)}, {"queue": AUTO, "category": AUTO}
    )
    assert out["queue"].decision == Decision.auto
    assert out["category"].decision == Decision.suggest
    assert "threshold" in out["category"].reason


def test_unconfigured_fields_are_suggested_and_shadow_fields_are_kept_out() -> None:
    out = decide_fields(
        {"queue": pred("Billing", 0.99), "category": pred("GENERAL", 0.99)},
        {"category": FieldPolicy(mode="shadow", threshold=0.1)},
    )
    assert out["queue"].decision == Decision.suggest
    assert out["category"].decision == Decision.shadow


@pytest.mark.parametrize("label", ["P1", "p1", "Critical", "Highest"])
def test_highest_priority_is_never_auto_applied(label: str) -> None:
    out = decide_fields({"priority": pred(label, 1.0)}, {"priority": FieldPolicy(mode="auto", threshold=0.0)})
    assert out["priority"].decision == Decision.suggest
    assert "never auto-applied" in out["priority"].reason


def test_lower_priorities_are_auto_applied_above_threshold() -> None:
    out = decide_fields({"priority": pred("P2", 0.95)}, {"priority": AUTO})
    assert out["priority"].decision == Decision.auto


def test_impact_and_urgency_that_compute_p1_are_gated() -> None:
    policies = {"impact": AUTO, "urgency": AUTO}
    gated = decide_fields({"impact": pred("1", 0.99), "urgency": pred("High", 0.99)}, policies)
    assert {d.decision for d in gated.values()} == {Decision.suggest}
    fine = decide_fields({"impact": pred("2", 0.99), "urgency": pred("1", 0.99)}, policies)
    assert {d.decision for d in fine.values()} == {Decision.auto}


def test_flagged_ticket_turns_auto_into_suggest() -> None:
    out = decide_fields({"queue": pred("Billing", 0.99)}, {"queue": AUTO}, allow_auto=False)
    assert out["queue"].decision == Decision.suggest


@pytest.mark.parametrize(
    ("impact", "urgency", "expected"),
    [
        ("1", "1", "P1"),
        ("1", "2", "P2"),
        ("2", "2", "P3"),
        ("3", "2", "P4"),
        ("Low", "low", "P5"),
        ("1 - High", "3 - Low", "P3"),
        ("unknown", "1", None),
        (None, "1", None),
    ],
)
def test_impact_urgency_matrix(impact: str | None, urgency: str | None, expected: str | None) -> None:
    assert priority_from_impact_urgency(impact, urgency) == expected
