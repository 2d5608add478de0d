"""Reviewed tickets reach the model's ticket memory between batches (workers/memory_sync.py), with the real model."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import InboundEvent, LabelCorrection, Suggestion, SuggestionStatus, utcnow
from service.settings import Settings
from tests.review.conftest import seed_suggestion
from tests.workers.conftest import seed_event
from workers.fake_triager import FakeTriager
from workers.memory_sync import MemorySync
from workers.model_backend import ModelTriager
from workers.pipeline import PipelineContext, triage_event

CACHE = Path(__file__).resolve().parents[2] / "var" / "models"


@pytest.fixture(scope="module")
def llm() -> Any:
    """The shipped adapter on the bundled base (skips where they are absent)."""
    from models.adapter import DEFAULT_ADAPTER
    from models.config import ModelConfig
    from models.inference import Triager

    if not (DEFAULT_ADAPTER / "triage.json").exists() or not (CACHE / "smollm2-135m-instruct" / "hf").exists():
        pytest.skip("shipped adapter or bundled base model absent")
    return Triager.load(ModelConfig(cache_dir=CACHE, max_new_tokens=16, batch_size=8))


@pytest.fixture
def model(llm: Any) -> Iterator[ModelTriager]:
    """The worker's adapter around the real model, learning into a copy of its memory (the model is shared)."""
    saved = llm.memory
    llm.memory = copy.deepcopy(saved)
    try:
        yield ModelTriager(llm, draft_replies=True)
    finally:
        llm.memory = saved


def _approve(engine: Engine, suggestion_id: int, reply: str) -> None:
    with Session(engine) as s:
        sug = s.get(Suggestion, suggestion_id)
        assert sug is not None
        sug.status, sug.final_reply, sug.decided_at = SuggestionStatus.approved, reply, utcnow()
        s.add(sug)
        s.commit()


def _correct(engine: Engine, ticket_id: int, field: str, old: str, new: str) -> None:
    with Session(engine) as s:
        s.add(LabelCorrection(ticket_id=ticket_id, field=field, old_value=old, new_value=new, origin="review"))
        s.commit()


def test_reviewed_tickets_reach_the_memory_once_per_interval_and_a_later_review_replaces_them(
    engine: Engine, model: ModelTriager, llm: Any
) -> None:
    queues = llm.fields["queue"]
    subject, body = "Espresso machine leaks", "The canteen espresso machine leaks water onto the floor every morning."
    reviewed = seed_suggestion(engine, subject=subject, body=body)
    seed_suggestion(engine, subject="Never reviewed", body="nobody looked at this one")
    reply = "Facilities will repair the espresso machine today; please avoid the wet floor."
    _approve(engine, reviewed, reply)
    _correct(engine, 1, "queue", "Network", queues[0])
    now = [1000.0]
    sync = MemorySync(engine, 60, clock=lambda: now[0])
    rows = len(llm.memory)

    assert sync(model) == 1  # the approved ticket only; its reply and its corrected queue are kept
    row = llm.memory.rows[-1]
    assert len(llm.memory) == rows + 1 and row["id"] == "jira:SUP-1"
    assert row["reply"] == reply and row["labels"]["queue"] == queues[0]
    assert "Network" not in row["labels"].values()  # a label outside the adapter's set cannot vote
    match = llm.memory.nearest([f"Subject: {subject}\n\n{body}"], ["en"], min_similarity=0.25)[0]
    assert match is not None and match.source_id == "jira:SUP-1"

    _correct(engine, 1, "queue", queues[0], queues[1])
    assert sync(model) == 0  # not due yet: no query at all
    now[0] += 61
    assert sync(model) == 1  # re-read (overlap) and replaced by ticket id, not added twice
    assert len(llm.memory) == rows + 1 and llm.memory.rows[-1]["labels"]["queue"] == queues[1]

    assert MemorySync(engine, 0)(model) == 0  # 0: only retraining learns from reviews
    assert MemorySync(engine, 60)(FakeTriager()) == 0  # a backend without a memory is left alone


def test_a_failing_memory_sync_never_holds_up_triage(
    engine: Engine, settings: Settings, fake_llm: FakeTriager, recorder: Any
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("database away")

    ctx = PipelineContext(engine, settings, lambda: fake_llm, recorder, learn=broken)
    event = seed_event(engine)
    assert triage_event(ctx, event).triaged == [event]
    with Session(engine) as s:
        ev = s.get(InboundEvent, event)
        assert ev is not None and ev.status == "triaged"
