"""The gate's live side scored before training: the same report as scoring both sides together, and a training
budget that keeps the candidate's side measured rather than guessed (service/learning/retrain.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.compare import compare, score_live
from models.config import ModelConfig
from service.learning.retrain import CANDIDATE_MARGIN, MIN_TRAIN_MIN, REPORT_S, TRAIN_SLACK, _train_budget
from tests.learning.tickets import KNOWN, NEW, Sample, stream


def _rows(path: Path, samples: list[Sample], prefix: str) -> Path:
    keys = ("subject", "body", "queue", "priority", "reply")
    rows = [{"id": f"{prefix}{i}", **{k: getattr(s, k) for k in keys}} for i, s in enumerate(samples)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.usefixtures("one_thread")
def test_scoring_the_live_side_first_gives_the_same_report(
    tiny_base: Path, first_adapter: Path, tmp_path: Path
) -> None:
    mcfg = ModelConfig(base=str(tiny_base), device="cpu", dtype="float32", cache_dir=tmp_path / "c", batch_size=8)
    holdout = _rows(tmp_path / "holdout.jsonl", stream([*KNOWN, NEW], 16, seed=5), "h")
    remembered = _rows(tmp_path / "remembered.jsonl", stream([NEW, *KNOWN], 12, seed=6), "r")
    kw = {"remembered": remembered, "forget": ["r0"]}
    together = compare(first_adapter, first_adapter, holdout, mcfg, reply_sample=4, log_fn=lambda *_: None, **kw)
    live = score_live(first_adapter, holdout, mcfg, reply_sample_size=4, **kw)  # type: ignore[arg-type]
    apart = compare(first_adapter, first_adapter, holdout, mcfg, reply_sample=4, live_scored=live,
                    log_fn=lambda *_: None)  # fmt: skip
    for report in (together, apart):
        for key in ("seconds", "seconds_live", "seconds_candidate", "live_adapter", "candidate_adapter"):
            report.pop(key)
    assert together == apart
    # the live side remembered the reviews (its memory votes), the candidate did not: a comparison, not a copy
    assert together["live_remembered"] > 0 and together["replies"]["n"] == 4
    with pytest.raises(ValueError, match="another reply sample"):
        compare(first_adapter, first_adapter, holdout, mcfg, reply_sample=2, live_scored=live, log_fn=lambda *_: None)


def test_the_training_budget_is_what_the_gate_leaves() -> None:
    said: list[str] = []
    minutes = _train_budget(12.0, 30.0, 60.0, said.append)
    assert minutes == pytest.approx(TRAIN_SLACK * (720 - 30 - 60 * CANDIDATE_MARGIN - REPORT_S) / 60)
    assert _train_budget(12.0, 30.0, 0.0, said.append) == pytest.approx(TRAIN_SLACK * 690 / 60)  # no gate to run
    assert _train_budget(2.0, 30.0, 60.0, said.append) == MIN_TRAIN_MIN
    assert "will go over" in said[-1] and "ITSM_LEARNING__TIME_BUDGET_MIN" in said[-1]
