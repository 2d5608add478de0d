"""One retrain: the live adapter's training tickets plus every reviewed ticket since, trained within a time budget
into a candidate, registered, gated on the most recent reviews, then shadowed, promoted or left for an admin.

Runs in the CLI (`itsm-triage retrain`) or a worker consuming the `learn` queue (the beat's schedule); one at a time
(a database lease). Nothing here runs in the API process: models/ is imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine

from service.db import session_scope
from service.domain.learning import Adapter
from service.learning import dataset, gate, lease, registry, store
from service.learning.registry import Change
from service.settings import Settings

log = structlog.get_logger(__name__)

LEASE = "retrain"
# The gate's candidate side is planned as the live side's measured seconds times this (the candidate may write more
# LLM drafts than the live adapter where it has fewer past replies to offer), plus the bootstrap's few seconds.
CANDIDATE_MARGIN, REPORT_S = 1.25, 10.0
# train() kept its budgets within 1.04x on 2 shared cores (bench/learning_loop.py): plan it a little short.
TRAIN_SLACK = 0.95
MIN_TRAIN_MIN = 0.5
# The recipe a retrain keeps from the live adapter (everything else is the library's default or set here).
RECIPE = ("max_tokens", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lora_layers", "epochs", "lr",
          "head_lr", "batch_size", "ticket_memory", "val_fraction", "priority_matrix")  # fmt: skip


class RetrainError(RuntimeError):
    """A retrain that cannot run as configured (the message says what to change)."""


@dataclass
class Outcome:
    """What a retrain did: the candidate (None when there was nothing to learn), the verdict and status changes."""

    candidate: Adapter | None
    verdict: gate.Verdict | None
    changes: list[Change] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def retrain(
    engine: Engine,
    settings: Settings,
    mcfg: Any,
    *,
    default_adapter: Path,
    actor: str,
    time_budget_min: float | None = None,
    on_pass: str | None = None,
    keep_files: bool = False,
    log_fn: Any = print,
) -> Outcome:
    """Train, register and gate a candidate on the reviewed tickets; act on the verdict as `on_pass` says."""
    cfg = settings.learning
    holder = f"{actor}@{socket.gethostname()}:{os.getpid()}"
    budget = float(time_budget_min or cfg.time_budget_min)
    with lease.held(engine, LEASE, holder, seconds=budget * 60 * 2 + 1800):
        return _retrain(engine, settings, mcfg, default_adapter, actor, budget, on_pass or cfg.on_gate_pass,
                        keep_files, log_fn)  # fmt: skip


def _retrain(
    engine: Engine,
    settings: Settings,
    mcfg: Any,
    default_adapter: Path,
    actor: str,
    budget: float,
    on_pass: str,
    keep_files: bool,
    log_fn: Any,
) -> Outcome:
    cfg = settings.learning
    t0 = time.monotonic()
    live = registry.ensure_live(engine, settings, default_adapter)
    if live.base_model != mcfg.base:
        raise RetrainError(
            f"the live adapter {live.version} was trained on {live.base_model!r} but ITSM_MODEL__BASE is "
            f"{mcfg.base!r}: retrain on the live adapter's base"
        )
    live_dir = store.materialize(engine, settings, live)
    fields = list(live.fields)
    with session_scope(engine) as session:
        try:
            data = dataset.build(
                session,
                live_dir,
                fields,
                holdout=cfg.holdout,
                min_reviewed=cfg.min_reviewed,
                review_weight=cfg.review_weight,
            )
        except dataset.NothingToLearn as exc:
            log.info("retrain_skipped", live=live.version, reason=str(exc))
            return Outcome(None, None, message=f"nothing to learn yet: {exc}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(settings.var_dir) / "learning" / f"{stamp}-from-{live.version}"
    log_fn(
        f"retraining from {live.version}: {data.stats['history_rows']} history + {data.stats['reviewed']} reviewed "
        f"tickets (weight {cfg.review_weight}); {data.stats['holdout']} most recent reviews held out"
        + (f"; new labels {data.stats['new_labels']}" if data.stats["new_labels"] else "")
    )
    try:
        from models.config import TrainConfig
        from models.train import train

        # the live adapter's side of the gate first: it does not depend on the candidate, and its measured cost is
        # what the candidate's side will cost, so the training gets what is left rather than a guessed share
        t_live = time.monotonic()
        live_scored = gate.score_live(cfg, mcfg, live_dir=live_dir, data=data, workdir=workdir, name=live.version)
        live_s = time.monotonic() - t_live
        train_min = _train_budget(budget, time.monotonic() - t0, live_s if live_scored is not None else 0.0, log_fn)

        recipe = {k: v for k, v in (live.training.get("config") or {}).items() if k in RECIPE}
        if "lora_targets" in recipe:
            recipe["lora_targets"] = tuple(recipe["lora_targets"])
        tcfg = TrainConfig(
            **recipe,
            fields=fields,
            time_budget_min=train_min,
            max_train_rows=cfg.max_train_rows or None,
            weight_col=dataset.WEIGHT,
            # refine the live adapter rather than relearn it: within a retrain's budget (a fraction of an epoch
            # on a CPU) a candidate from scratch was worse than live on its old labels (bench/learning_loop.py)
            init_adapter=str(live_dir) if cfg.warm_start else None,
        )
        t_train = time.monotonic()
        train(dataset.write_jsonl(data.train, workdir / "train.jsonl"), workdir / "adapter", tcfg, mcfg,
              log_fn=log_fn)  # fmt: skip
        trained_s = time.monotonic() - t_train
        candidate = registry.register(
            engine,
            settings,
            workdir / "adapter",
            actor=actor,
            parent_id=live.id,
            data={"retrain": data.stats},
            reason=f"trained from {live.version}; being gated",
        )
        t_gate = time.monotonic()
        verdict, report = gate.run(
            cfg,
            mcfg,
            live_dir=live_dir,
            candidate_dir=workdir / "adapter",
            data=data,
            workdir=workdir,
            names=(candidate.version, live.version),
            live_scored=live_scored,
            log_fn=log_fn,
        )
        report.update(live_version=live.version, stats=data.stats)
        registry.record_gate(engine, candidate.id or 0, passed=verdict.passed, report=report, reason=verdict.reason)
        gated_s = time.monotonic() - t_gate
    finally:
        if not keep_files:  # the training file holds ticket text; the adapter itself is in the registry now
            shutil.rmtree(workdir, ignore_errors=True)
    changes = _act(engine, candidate.version, verdict, on_pass) if verdict.passed else []
    seconds = {
        "gate_live": round(live_s, 1),
        "train": round(trained_s, 1),
        "gate_candidate": round(gated_s, 1),
        "total": round(time.monotonic() - t0, 1),
        "budget": round(budget * 60, 1),
    }
    log.info("retrain_finished", candidate=candidate.version, passed=verdict.passed, on_pass=on_pass, **seconds)
    return Outcome(candidate, verdict, changes, data.stats, verdict.reason, seconds)


def _train_budget(budget_min: float, spent_s: float, live_side_s: float, log_fn: Any) -> float:
    """Minutes left for training: the budget less what was spent (data, the live side of the gate) and the
    candidate's side of the gate, planned from the live side's measured cost."""
    left_s = budget_min * 60 - spent_s - (live_side_s * CANDIDATE_MARGIN + REPORT_S if live_side_s else 0.0)
    minutes = TRAIN_SLACK * left_s / 60
    if minutes < MIN_TRAIN_MIN:
        log_fn(
            f"the {budget_min:g}-minute budget leaves {max(minutes, 0):.1f} min for training after the gate "
            f"({live_side_s:.0f} s for the live adapter's side); training for {MIN_TRAIN_MIN} min, the run will "
            "go over: raise ITSM_LEARNING__TIME_BUDGET_MIN or lower ITSM_LEARNING__HOLDOUT / GATE_REPLY_SAMPLE"
        )
        return MIN_TRAIN_MIN
    log_fn(f"training budget {minutes:.1f} min ({spent_s:.0f} s spent, live side of the gate {live_side_s:.0f} s)")
    return minutes


def _act(engine: Engine, version: str, verdict: gate.Verdict, on_pass: str) -> list[Change]:
    """What a candidate that passed becomes: shadow, live, or a candidate an admin promotes."""
    if on_pass == "promote":
        return registry.promote(engine, version, actor="service:gate", via="gate", reason=verdict.reason)
    if on_pass == "shadow":
        return registry.start_shadow(engine, version, actor="service:gate", reason="passed the gate; shadowing")
    return []
