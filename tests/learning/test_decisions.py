"""The loop's automatic decisions: the gate's verdict on a comparison report, the shadow comparison on agents' final
values (promote, retire, wait), and the rollback of a live adapter whose precision falls below its predecessor's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.learning import AdapterStatus
from service.learning import registry, stats
from service.learning.checks import run_checks
from service.learning.gate import decide
from service.settings import LearningSettings, Settings
from tests.learning.fixtures import adapter_dir, reviewed_triage


def _field(live: float, cand: float, lo: float, hi: float, *, ece: tuple[float, float] = (0.05, 0.05),
           ece_lo: float = -0.01) -> dict[str, Any]:  # fmt: skip
    return {
        "n": 40,
        "live": {"macro_f1": live, "accuracy": live, "ece": ece[0]},
        "candidate": {"macro_f1": cand, "accuracy": cand, "ece": ece[1]},
        "macro_f1_margin": cand - live,
        "macro_f1_margin_lower": lo,
        "macro_f1_margin_upper": hi,
        "ece_difference": ece[1] - ece[0],
        "ece_difference_lower": ece_lo,
        "ece_difference_upper": ece_lo + 0.05,
        "new_labels": {"Printers": {"n": 4, "candidate": 3, "candidate_llm_only": 3}},
    }


CFG = LearningSettings(gate_min_holdout=20)


def test_the_gate_passes_a_candidate_better_in_one_field_and_worse_in_none() -> None:
    report = {"n": 40, "confidence": 0.975, "fields": {"queue": _field(0.5, 0.6, 0.02, 0.18),
                                                      "priority": _field(0.6, 0.6, -0.05, 0.05)}}  # fmt: skip
    verdict = decide(report, CFG)
    assert verdict.passed, verdict.findings
    assert any("queue macro-F1 0.500 -> 0.600" in f and f.endswith("better") for f in verdict.findings)
    assert "Printers': 3/4 held-out tickets right (3/4 by the LLM head alone)" in verdict.reason


@pytest.mark.parametrize(
    ("fields", "replies", "why"),
    [
        ({"queue": _field(0.5, 0.55, -0.01, 0.1)}, None, "no field is better with 97.5% confidence"),
        ({"queue": _field(0.5, 0.6, 0.02, 0.2), "priority": _field(0.6, 0.5, -0.2, -0.01)}, None, "priority.*: worse"),
        ({"queue": _field(0.5, 0.6, 0.02, 0.2, ece=(0.05, 0.2), ece_lo=0.1)}, None, "worse by more than the 0.020"),
        ({"queue": _field(0.5, 0.6, 0.02, 0.2)}, {"n": 30, "live_chrf": 40.0, "candidate_chrf": 30.0,
         "chrf_margin": -10.0, "chrf_margin_lower": -14.0, "chrf_margin_upper": -6.0}, "replies chrF .*: worse"),
    ],
)  # fmt: skip
def test_the_gate_refuses_with_the_reason(fields: dict[str, Any], replies: dict[str, Any] | None, why: str) -> None:
    verdict = decide({"n": 40, "confidence": 0.975, "fields": fields, "replies": replies}, CFG)
    assert not verdict.passed
    assert verdict.reason.startswith("refused by the gate")
    import re

    assert re.search(why, verdict.reason), verdict.reason


def test_the_gate_refuses_to_decide_on_too_few_tickets() -> None:
    verdict = decide({"n": 7, "fields": {}}, CFG)
    assert not verdict.passed and "7 held-out reviewed ticket(s); the gate decides on at least 20" in verdict.reason


def test_the_small_tests_agree_with_known_values() -> None:
    assert stats.paired_better(8, 1) == pytest.approx(10 / 512)  # P(X >= 8), X ~ Bin(9, 1/2)
    assert stats.paired_better(0, 0) == 1.0
    assert stats.proportion_below(60, 100, 80, 100) == pytest.approx(0.00101, abs=1e-5)
    assert stats.field_confidence(0.95, 2) == pytest.approx(0.975)


@pytest.fixture
def cfg(settings: Settings, tmp_path: Path) -> Settings:
    update = {"cache_dir": tmp_path / "cache", "shadow_min_reviewed": 20, "shadow_max_reviewed": 60,
              "rollback_min_reviewed": 20, "rollback_window": 50}  # fmt: skip
    learning = settings.learning.model_copy(update=update)
    return settings.model_copy(update={"learning": learning})


def _registry(engine: Engine, cfg: Settings, tmp_path: Path) -> tuple[int, int]:
    """v1 live, v2 a candidate that passed the gate: (v1 id, v2 id)."""
    v1 = registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    v2 = registry.register(engine, cfg, adapter_dir(tmp_path, "retrained"), actor="t", parent_id=v1.id)
    registry.record_gate(engine, v2.id or 0, passed=True, report={"n": 30}, reason="passed the gate")
    return v1.id or 0, v2.id or 0


def test_a_shadow_better_on_agents_final_values_is_promoted(cfg: Settings, engine: Engine, tmp_path: Path) -> None:
    _, v2 = _registry(engine, cfg, tmp_path)
    registry.start_shadow(engine, "v2", actor="t")
    for i in range(10):  # not enough reviewed shadow tickets yet: wait
        reviewed_triage(engine, version="v1", predicted={"queue": "Hardware"}, final={"queue": "Printers"},
                        key=f"A-{i}", shadow=(v2, {"queue": "Printers"}))  # fmt: skip
    report = run_checks(engine, cfg)
    assert report.shadow is not None and report.shadow.decision == "wait" and not report.changes
    for i in range(14):  # the shadow gets the printer tickets right, the live adapter does not
        reviewed_triage(engine, version="v1", predicted={"queue": "Hardware"}, final={"queue": "Printers"},
                        key=f"B-{i}", shadow=(v2, {"queue": "Printers"}))  # fmt: skip
    reviewed_triage(engine, version="v1", predicted={"queue": "Network"}, key="C-1", shadow=(v2, {"queue": "Access"}))
    report = run_checks(engine, cfg)
    assert report.shadow is not None and report.shadow.decision == "promote", report.shadow.reason
    queue = next(f for f in report.shadow.fields if f.field == "queue")
    assert (queue.n, queue.only_shadow, queue.only_live) == (25, 24, 1)
    assert [(c.version, c.after) for c in report.changes] == [("v1", "retired"), ("v2", "live")]
    with Session(engine) as s:
        live = registry.current(s, AdapterStatus.live)
        assert live is not None and live.promoted_via == "shadow" and live.report and live.report["shadow"]["reviewed"]


def test_a_shadow_worse_on_agents_final_values_is_retired(cfg: Settings, engine: Engine, tmp_path: Path) -> None:
    _, v2 = _registry(engine, cfg, tmp_path)
    registry.start_shadow(engine, "v2", actor="t")
    for i in range(22):
        reviewed_triage(engine, version="v1", predicted={"queue": "Network"}, key=f"A-{i}",
                        shadow=(v2, {"queue": "Access"}))  # fmt: skip
    report = run_checks(engine, cfg)
    assert [(c.version, c.after) for c in report.changes] == [("v2", "retired")]
    admin = cfg.model_copy(update={"learning": cfg.learning.model_copy(update={"shadow_decision": "admin"})})
    registry.start_shadow(engine, "v2", actor="t")
    assert not run_checks(engine, admin).changes  # 'admin': the comparison is shown, nothing changes


def test_a_live_adapter_whose_precision_falls_below_its_predecessors_is_rolled_back(
    cfg: Settings, engine: Engine, tmp_path: Path
) -> None:
    _registry(engine, cfg, tmp_path)
    for i in range(30):  # v1's reviewed tickets: right 27 times in 30
        final = {"queue": "Network" if i % 10 else "Access"}
        reviewed_triage(engine, version="v1", predicted={"queue": "Network"}, final=final, key=f"A-{i}")
    registry.promote(engine, "v2", actor="alice")
    assert run_checks(engine, cfg).rollback.decision == "wait"  # type: ignore[union-attr]
    for i in range(30):  # v2: right 12 times in 30
        final = {"queue": "Network" if i % 5 < 2 else "Access"}
        reviewed_triage(engine, version="v2", predicted={"queue": "Network"}, final=final, key=f"B-{i}")
    report = run_checks(engine, cfg)
    assert report.rollback is not None and report.rollback.decision == "rollback"
    assert "queue precision 12/30 for v2 vs 27/30 for v1" in report.rollback.reason
    assert [(c.version, c.after) for c in report.changes] == [("v2", "retired"), ("v1", "live")]
    # the restored adapter is not judged against the one it replaced (no flapping)
    assert run_checks(engine, cfg).rollback is None
    off = cfg.model_copy(update={"learning": cfg.learning.model_copy(update={"auto_rollback": False})})
    registry.promote(engine, "v2", actor="alice", force=True)
    report = run_checks(engine, off)
    assert report.rollback is not None and report.rollback.decision == "rollback" and not report.changes
