"""What a retrain learns from, and what the gate judges on: the live adapter's own tickets plus every reviewed ticket
(corrected labels win, sent replies are reply data), the most recent reviews held out, re-filed and erased tickets
handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.privacy import Erasure
from service.learning import dataset
from tests.learning.fixtures import adapter_dir, reviewed_triage

HISTORY = [
    {"id": "h1", "text": "Subject: VPN down\n\nThe tunnel drops.", "labels": {"queue": "Network", "priority": "P2"},
     "reply": "We are on it.", "language": "en"},
    {"id": "h2", "text": "Subject: Printer broken\n\nThe printer on floor 2 jams.",
     "labels": {"queue": "Hardware", "priority": "P3"}},
    {"id": "h3", "text": "Password reset please", "labels": {"queue": "Access"}},
]  # fmt: skip


def test_history_and_reviews_with_the_newest_reviews_held_out(engine: Engine, tmp_path: Path) -> None:
    live = adapter_dir(tmp_path, "live", memory=HISTORY)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(12):
        queue = "Printers" if i % 2 else "Network"
        reviewed_triage(
            engine,
            version="v1",
            predicted={"queue": "Hardware", "priority": "P3"},
            final={"queue": queue},
            key=f"ITSD-{i}",
            subject=f"Ticket {i}",
            body=f"body {i}",
            at=t0 + timedelta(minutes=i),
        )
    # a re-filed ticket: the same text as a history row, now reviewed with the new queue
    reviewed_triage(engine, version="v1", predicted={"queue": "Hardware"}, final={"queue": "Printers"},
                    key="ITSD-99", at=t0 + timedelta(minutes=30))  # fmt: skip
    with Session(engine) as s:
        data = dataset.build(s, live, ["queue", "priority"], holdout=200, min_reviewed=5, review_weight=3)
    held = [r["id"] for r in data.holdout]
    assert held == ["jira:ITSD-9", "jira:ITSD-10", "jira:ITSD-11", "jira:ITSD-99"]  # a third, the newest, in order
    ids = [r["id"] for r in data.train]
    assert "h2" not in ids and {"h1", "h3"} <= set(ids)  # the re-filed history row gave way (it is held out too)
    assert data.held_twins == ["h2"]  # ... and the gate takes it out of the live adapter's memory as well
    assert not set(held) & set(ids)
    reviewed = {r["id"]: r for r in data.train if r["id"].startswith("jira:")}
    assert len(reviewed) == 9 and all(r[dataset.WEIGHT] == 3 for r in reviewed.values())
    assert reviewed["jira:ITSD-1"]["queue"] == "Printers" and reviewed["jira:ITSD-1"]["priority"] == "P3"
    assert reviewed["jira:ITSD-1"]["reply"] == "Hello, we are on it."  # the sent reply is reply data
    h1 = next(r for r in data.train if r["id"] == "h1")
    assert (h1["subject"], h1["body"], h1["queue"], h1["reply"]) == ("VPN down", "The tunnel drops.", "Network",
                                                                   "We are on it.")  # fmt: skip
    assert data.stats["new_labels"] == {"queue": ["Printers"]}
    assert data.stats["holdout_from"] == (t0 + timedelta(minutes=9)).isoformat()
    assert data.stats["memory_since"] == data.stats["holdout_from"]
    assert [r["id"] for r in data.remembered] == [f"jira:ITSD-{i}" for i in range(9)]


def test_erased_tickets_never_reach_a_new_adapter(engine: Engine, tmp_path: Path) -> None:
    live = adapter_dir(tmp_path, "live", memory=HISTORY)
    for i in range(6):
        reviewed_triage(engine, version="v1", predicted={"queue": "Network"}, key=f"ITSD-{i}", body=f"b{i}")
    with Session(engine) as s:
        s.add(Erasure(reason="request", memory_ids=["h1", "jira:ITSD-0"]))
        s.commit()
        data = dataset.build(s, live, ["queue"], holdout=200, min_reviewed=2, review_weight=2)
    everything = {r["id"] for r in [*data.train, *data.holdout]}
    assert "h1" not in everything and "jira:ITSD-0" not in everything
    assert set(data.erased) == {"h1", "jira:ITSD-0"}


def test_too_few_new_reviews_is_nothing_to_learn(engine: Engine, tmp_path: Path) -> None:
    live = adapter_dir(tmp_path, "live", memory=HISTORY)
    reviewed_triage(engine, version="v1", predicted={"queue": "Network"}, key="ITSD-1")
    with Session(engine) as s, pytest.raises(dataset.NothingToLearn, match="1 reviewed ticket"):
        dataset.build(s, live, ["queue"], holdout=200, min_reviewed=50, review_weight=3)
