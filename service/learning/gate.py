"""The gate: a candidate goes further only if it beats the live adapter on the most recent reviewed tickets.

Measurement is models/compare.py (both adapters as they would serve, a paired bootstrap over the held-out tickets);
the decision is here: better in at least one field with the configured confidence (split over the fields tested, so
testing two fields does not double the chance of a lucky pass), significantly worse in none, calibration not worse
by more than allowed, suggested replies not significantly worse. Every finding is a line of the reason an admin sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.learning.dataset import TrainingSet, write_jsonl
from service.learning.stats import field_confidence
from service.settings import LearningSettings


@dataclass
class Verdict:
    """The gate's decision and every finding behind it."""

    passed: bool
    findings: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One text for the registry: the verdict, then the findings."""
        head = "passed the gate" if self.passed else "refused by the gate"
        return head + (": " + "; ".join(self.findings) if self.findings else "")


def decide(report: dict[str, Any], cfg: LearningSettings) -> Verdict:
    """The verdict on a comparison report (models/compare.py's figures)."""
    n = int(report.get("n") or 0)
    if n < cfg.gate_min_holdout:
        return Verdict(
            False,
            [
                f"{n} held-out reviewed ticket(s); the gate decides on at least {cfg.gate_min_holdout} "
                "(ITSM_LEARNING__GATE_MIN_HOLDOUT); review more tickets and retrain"
            ],
        )
    conf = float(report.get("confidence") or cfg.gate_confidence)
    better, blocked, findings = [], [], []
    for name, m in (report.get("fields") or {}).items():
        lo, hi, margin = m["macro_f1_margin_lower"], m["macro_f1_margin_upper"], m["macro_f1_margin"]
        line = (
            f"{name} macro-F1 {m['live']['macro_f1']:.3f} -> {m['candidate']['macro_f1']:.3f} ({margin:+.3f}, "
            f"{conf:.1%} bounds {lo:+.3f} … {hi:+.3f}, n={m['n']})"
        )
        if lo > cfg.gate_min_margin:
            better.append(name)
            findings.append(f"{line}: better")
        elif hi < 0:
            blocked.append(name)
            findings.append(f"{line}: worse")
        else:
            findings.append(f"{line}: not better with {conf:.1%} confidence")
        if m["ece_difference_lower"] > cfg.gate_max_ece_increase:
            blocked.append(f"{name} calibration")
            findings.append(
                f"{name} ECE {m['live']['ece']:.3f} -> {m['candidate']['ece']:.3f}: worse by more than the "
                f"{cfg.gate_max_ece_increase:.3f} allowed (lower bound {m['ece_difference_lower']:+.3f})"
            )
        for label, nl in (m.get("new_labels") or {}).items():
            if nl["n"]:
                findings.append(
                    f"{name} new label {label!r}: {nl['candidate']}/{nl['n']} held-out tickets right "
                    f"({nl['candidate_llm_only']}/{nl['n']} by the LLM head alone)"
                )
    replies = report.get("replies") or {}
    if replies.get("n"):
        line = (
            f"replies chrF {replies['live_chrf']:.1f} -> {replies['candidate_chrf']:.1f} "
            f"({replies['chrf_margin']:+.2f}, upper bound {replies['chrf_margin_upper']:+.2f}, n={replies['n']})"
        )
        if replies["chrf_margin_upper"] < 0:
            blocked.append("replies")
            findings.append(f"{line}: worse")
        else:
            findings.append(line)
    if not better and not blocked:
        findings.insert(0, f"no field is better with {conf:.1%} confidence")
    return Verdict(bool(better) and not blocked, findings)


def _inputs(data: TrainingSet, workdir: Path) -> dict[str, Any]:
    """The held-out tickets and the live adapter's memory as files compare reads (both sides use the same)."""
    return {
        "holdout": write_jsonl(data.holdout, workdir / "holdout.jsonl"),
        "remembered": write_jsonl(data.remembered, workdir / "remembered.jsonl") if data.remembered else None,
        "forget": [*data.erased, *data.held_twins],
    }


def score_live(
    cfg: LearningSettings, mcfg: Any, *, live_dir: Path, data: TrainingSet, workdir: Path, name: str
) -> Any | None:
    """The live adapter's side of the gate, before training (models/compare.py's score_live): its cost is what the
    candidate's side will cost, so the retrain keeps that much of its budget. None when the gate will not compare
    (too few held-out tickets)."""
    if len(data.holdout) < cfg.gate_min_holdout:
        return None
    from models.compare import score_live as score  # the model stack: CLI and worker processes only

    io = _inputs(data, workdir)
    return score(
        live_dir,
        io["holdout"],
        mcfg,
        remembered=io["remembered"],
        forget=io["forget"],
        reply_sample_size=cfg.gate_reply_sample,
        name=name,
    )


def run(
    cfg: LearningSettings,
    mcfg: Any,
    *,
    live_dir: Path,
    candidate_dir: Path,
    data: TrainingSet,
    workdir: Path,
    names: tuple[str, str] | None = None,
    live_scored: Any | None = None,
    log_fn: Any = print,
) -> tuple[Verdict, dict[str, Any]]:
    """Compare the candidate with the live adapter on the held-out rows and decide (the live side comes as
    `live_scored` when score_live ran before training)."""
    fields = {f for r in data.holdout for f in r if f not in ("id", "subject", "body", "reply")}
    report: dict[str, Any] = {"n": len(data.holdout), "fields": {}}
    if len(data.holdout) >= cfg.gate_min_holdout:
        from models.compare import compare  # the model stack: CLI and worker processes only

        io = _inputs(data, workdir)
        report = compare(
            candidate_dir,
            live_dir,
            io["holdout"],
            mcfg,
            remembered=io["remembered"],
            forget=io["forget"],
            confidence=field_confidence(cfg.gate_confidence, len(fields)),
            reply_sample=cfg.gate_reply_sample,
            names=names,
            live_scored=live_scored,
            log_fn=log_fn,
        )
    verdict = decide(report, cfg)
    report["verdict"] = {"passed": verdict.passed, "findings": verdict.findings}
    return verdict, report
