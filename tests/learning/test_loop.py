"""The whole learning loop on a real (tiny) model on CPU: agents keep moving printer tickets to a new queue; the
retrain learns it, the gate passes on the most recent tickets, the candidate is promoted, the worker picks it up
between batches, and the next printer ticket gets the new queue from the model itself. The reverse: a retrain on
corrupted corrections is refused by the gate, and the live adapter those corrections judge worse is rolled back.

Two retrains of a tiny random Llama (hidden 64, 3 layers): seconds each."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from models.config import ModelConfig
from models.inference import TicketInput, Triager
from service.api.app import create_app
from service.db import make_engine
from service.domain.learning import Adapter, ShadowPrediction
from service.domain.tables import Ticket, Triage
from service.learning import registry, store
from service.learning.checks import run_checks
from service.learning.retrain import retrain
from service.migrate import upgrade
from tests.learning.conftest import loop_settings
from tests.learning.desk import Desk
from tests.learning.tickets import KNOWN, NEW, stream
from workers.app import make_worker_app
from workers.model_backend import model_config

pytestmark = pytest.mark.slow


def _rotate(queue: str) -> str:
    """A corrupted correction: every ticket moved to the wrong queue (printers to network)."""
    order = [*KNOWN, NEW]
    return KNOWN[(order.index(queue) + 1) % len(KNOWN)]


@pytest.mark.usefixtures("one_thread")
def test_corrections_become_a_better_adapter_and_corrupted_ones_never_go_live(
    tiny_base: Path, first_adapter: Path, tmp_path: Path
) -> None:
    settings = loop_settings(
        tmp_path,
        tiny_base,
        first_adapter,
        min_reviewed=30,
        holdout=20,
        gate_min_holdout=12,
        gate_reply_sample=8,
        on_gate_pass="shadow",
        shadow_min_reviewed=12,
        rollback_min_reviewed=20,
        rollback_confidence=0.95,
        adapter_sync_s=0.5,
    )
    upgrade(settings)
    engine = make_engine(settings)
    runtime = make_worker_app(settings).itsm_runtime  # type: ignore[attr-defined]  # the worker's own per-process state
    mcfg = model_config(settings)
    with TestClient(create_app(settings, engine=engine)) as api:
        desk = Desk(settings, engine, api, runtime.triager, learn=runtime.learn, shadow=runtime.shadow)

        # v1: the configured adapter, registered on first use; it has never seen a printer ticket
        assert runtime.triager().adapter_version == "v1" and NEW not in runtime.triager().llm.fields["queue"]
        base = runtime.triager().llm.lm
        first = desk.arrive(stream([*KNOWN, NEW], 60, seed=1))
        desk.work()
        assert {desk.triage_of(k).adapter_version for k in first} == {"v1"}
        moved = desk.review(first)
        printers = [k for k in first if desk.truth[k].queue == NEW]
        assert moved >= len(printers) == 15  # every printer ticket had to be moved by hand

        # retrain -> the gate passes on the 20 most recent reviews -> shadow
        outcome = retrain(engine, settings, mcfg, default_adapter=first_adapter, actor="test", log_fn=print)
        assert outcome.candidate is not None and outcome.verdict is not None
        print("\n".join(outcome.verdict.findings))
        assert outcome.stats["new_labels"] == {"queue": [NEW]}
        assert outcome.stats["holdout"] == 20 and outcome.stats["reviewed"] == 40
        assert {"gate_live", "train", "gate_candidate", "total", "budget"} <= set(outcome.seconds)
        assert outcome.verdict.passed, outcome.verdict.reason
        queue = outcome.candidate and _report(engine, outcome.candidate.version)["fields"]["queue"]
        assert queue["macro_f1_margin_lower"] > 0 and queue["new_labels"][NEW]["n"] == 5
        assert [(c.version, c.after) for c in outcome.changes] == [("v2", "shadow")]

        # shadow: the worker loads v2 beside v1 between batches; v1 acts, both predictions are stored
        time.sleep(settings.learning.adapter_sync_s)
        shadowed = desk.arrive(stream([NEW, *KNOWN], 24, seed=2))
        desk.work()
        assert {desk.triage_of(k).adapter_version for k in shadowed} == {"v1"}
        with Session(engine) as session:
            pairs = session.exec(select(Triage, ShadowPrediction).join(ShadowPrediction)).all()
        assert len(pairs) == 24
        on_printers = [(t.predictions["queue"]["label"], sp.predictions["queue"]["label"]) for t, sp in pairs
                       if desk.truth[_key(engine, t.ticket_id)].queue == NEW]  # fmt: skip
        assert len(on_printers) == 6 and all(live != NEW and shadow == NEW for live, shadow in on_printers)
        desk.review(shadowed)
        # agents' final values say v2 is better: the check promotes it, the worker swaps it in, no restart
        report = run_checks(engine, settings)
        print("\n".join(report.lines()))
        assert report.shadow is not None and report.shadow.decision == "promote"
        assert [(c.version, c.after) for c in report.changes] == [("v1", "retired"), ("v2", "live")]
        time.sleep(settings.learning.adapter_sync_s)
        nxt = desk.arrive(stream([NEW, *KNOWN], 8, seed=7))
        desk.work()
        assert runtime.triager().adapter_version == "v2" and runtime.triager().llm.lm is base  # the same base model
        assert {desk.triage_of(k).adapter_version for k in nxt} == {"v2"}
        assert [desk.triage_of(k).predictions["queue"]["label"] for k in nxt if desk.truth[k].queue == NEW] == [NEW] * 2

        # ... from the model itself: the LLM head alone, and the ensemble with the ticket memory switched off, on
        # new printer tickets (texts no memory holds)
        llm = runtime.triager().llm
        fresh = stream([NEW], 8, seed=6)
        texts = [llm.prepare(TicketInput("x", s.subject, s.body))[0] for s in fresh]
        labels = llm.fields["queue"]
        alone = Triager.load(ModelConfig(**{**llm.cfg.__dict__, "adapter": str(llm_dir(engine, settings, "v2"))}))
        shared, separate = llm.classify_texts(texts), alone.classify_texts(texts)
        assert all(np.allclose(shared[f], separate[f], atol=1e-5) for f in shared)  # sharing the base changes nothing
        head = llm.classify_components(texts)["queue"].llm
        assert [labels[i] for i in head.argmax(1)] == [NEW] * len(texts), np.exp(head).round(2)
        memory, llm.memory = llm.memory, None
        try:
            assert [labels[i] for i in llm.classify_texts(texts)["queue"].argmax(1)] == [NEW] * len(texts)
        finally:
            llm.memory = memory

        # the reverse: corrupted corrections (every ticket moved to a wrong queue), then 20 honest reviews
        bad = desk.arrive(stream([*KNOWN, NEW], 30, seed=3))
        good = desk.arrive(stream([*KNOWN, NEW], 20, seed=4))
        desk.work()
        desk.review(bad, queue_of=lambda s: _rotate(s.queue))
        desk.review(good)
        refused = retrain(engine, settings, mcfg, default_adapter=first_adapter, actor="test", log_fn=print)
        assert refused.candidate is not None and refused.verdict is not None
        print("\n".join(refused.verdict.findings))
        assert not refused.verdict.passed and not refused.changes
        with Session(engine) as session:
            v3 = registry.by_version(session, refused.candidate.version)
        assert (v3.status, v3.gate) == ("candidate", "failed") and "refused by the gate" in (v3.reason or "")

        # those corrections judge v2 worse than v1 was: the automatic check rolls it back, the worker follows
        report = run_checks(engine, settings)
        print("\n".join(report.lines()))
        assert report.rollback is not None and report.rollback.decision == "rollback"
        assert [(c.version, c.after) for c in report.changes] == [("v2", "retired"), ("v1", "live")]
        time.sleep(settings.learning.adapter_sync_s)
        again = desk.arrive(stream([NEW], 1, seed=5))
        desk.work()
        assert desk.triage_of(again[0]).adapter_version == "v1"
    with Session(engine) as session:
        assert [a.status for a in session.exec(select(Adapter).order_by(col(Adapter.id))).all()] == [
            "live",
            "retired",
            "candidate",
        ]
    engine.dispose()


def _report(engine, version: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    with Session(engine) as session:
        return registry.by_version(session, version).report or {}


def _key(engine, ticket_id: int) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket.external_key


def llm_dir(engine, settings, version: str) -> Path:  # type: ignore[no-untyped-def]
    """An adapter's files as a worker caches them."""
    with Session(engine) as session:
        return store.materialize(engine, settings, registry.by_version(session, version))
