"""Decisions on drafts: exactly-once approval under concurrency (T20), audit rows (T25), outbox payloads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from service.domain.privacy import text_digest
from service.domain.tables import DeliveryStatus, LabelCorrection
from service.queue import DELIVER_TASK
from service.review.feedback import edit_distance
from service.settings import Settings
from tests.review.conftest import Accounts, audit_rows, build_app, deliveries, seed_suggestion, suggestion


def test_fifty_parallel_approvals_of_one_draft_make_exactly_one_reply(
    live_server: str, engine: Engine, accounts: Accounts
) -> None:
    """T20: two agents hammer approve on the same draft; one wins, the rest get 409 and leave `conflict` rows."""
    sid = seed_suggestion(engine)
    headers = [accounts.headers("agent"), accounts.headers("admin")]

    def approve(i: int) -> int:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            body = {"version": 0, "reply": f"Reply from call {i}"}
            return c.post(f"/api/v1/suggestions/{sid}/approve", json=body, headers=headers[i % 2]).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(approve, range(50)))

    assert sorted(codes) == [200] + [409] * 49
    replies = deliveries(engine, "reply")
    assert len(replies) == 1
    assert replies[0].idempotency_key == f"reply:{sid}"
    final = suggestion(engine, sid)
    assert final.status == "approved" and final.version == 1
    assert replies[0].payload == {"public_reply": final.final_reply, "suggestion_id": sid}
    assert len(audit_rows(engine, "approved")) == 1
    assert len(audit_rows(engine, "conflict")) == 49


def test_approval_records_edit_distance_and_queues_the_reply_on_the_broker(
    client: TestClient, engine: Engine, accounts: Accounts, settings: Settings
) -> None:
    sid = seed_suggestion(engine, draft="Hello, we are on it.")
    resp = client.post(
        f"/api/v1/suggestions/{sid}/approve",
        json={"version": 0, "reply": "Hello, we are on it!"},
        headers=accounts.headers("agent"),
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "approved" and out["edit_distance"] == 1 and out["version"] == 1
    row = suggestion(engine, sid)
    assert (row.final_reply, row.edit_distance, row.reviewer) == ("Hello, we are on it!", 1, "agent")
    [delivery] = deliveries(engine, "reply")
    assert delivery.id == out["delivery_id"] and delivery.status == DeliveryStatus.pending
    [entry] = audit_rows(engine, "approved")
    assert entry.actor == "agent" and entry.before and entry.before["draft"] == text_digest("Hello, we are on it.")
    assert entry.after and entry.after["edited"] is True
    # The embedded broker is a real SQLite database: the deliver task must be sitting on it with the id.
    broker = create_engine(settings.broker_url.removeprefix("sqla+"))
    with broker.connect() as conn:
        payloads = [r[0] for r in conn.execute(text("SELECT payload FROM kombu_message"))]
    broker.dispose()
    assert any(DELIVER_TASK in p and f"[{delivery.id}]" in p for p in payloads)


def test_a_broker_outage_does_not_lose_the_approval(settings: Settings, engine: Engine, accounts: Accounts) -> None:
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    with TestClient(build_app(dead, engine), base_url="https://testserver") as c:
        sid = seed_suggestion(engine)
        resp = c.post(f"/api/v1/suggestions/{sid}/approve", json={}, headers=accounts.headers("agent"))
    assert resp.status_code == 200
    [delivery] = deliveries(engine, "reply")
    assert delivery.status == DeliveryStatus.pending  # the sweeper sends it once the broker is back


def test_reject_needs_a_reason_and_blocks_a_later_approve(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    sid = seed_suggestion(engine)
    h = accounts.headers("agent")
    assert client.post(f"/api/v1/suggestions/{sid}/reject", json={"reason": "   "}, headers=h).status_code == 422
    assert (
        client.post(f"/api/v1/suggestions/{sid}/reject", json={"reason": "wrong product"}, headers=h).json()["status"]
        == "rejected"
    )
    resp = client.post(f"/api/v1/suggestions/{sid}/approve", json={}, headers=accounts.headers("admin"))
    assert resp.status_code == 409 and resp.json()["error"] == "conflict"
    assert deliveries(engine) == []
    assert [a.action for a in audit_rows(engine)] == ["rejected", "conflict"]
    assert suggestion(engine, sid).reason == "wrong product"


def test_a_stale_version_is_a_conflict_even_while_pending(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    sid = seed_suggestion(engine)
    resp = client.post(f"/api/v1/suggestions/{sid}/approve", json={"version": 3}, headers=accounts.headers("agent"))
    assert resp.status_code == 409
    assert suggestion(engine, sid).status == "pending"


def test_an_empty_reply_cannot_be_approved(client: TestClient, engine: Engine, accounts: Accounts) -> None:
    sid = seed_suggestion(engine)
    resp = client.post(f"/api/v1/suggestions/{sid}/approve", json={"reply": " \n "}, headers=accounts.headers("agent"))
    assert resp.status_code == 422 and deliveries(engine) == []


def test_label_corrections_are_recorded_and_written_back(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    seed_suggestion(engine)
    h = accounts.headers("agent")
    resp = client.post(
        "/api/v1/tickets/1/corrections", json={"fields": {"queue": "Access", "priority": "P3"}}, headers=h
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [(c["field"], c["old_value"], c["new_value"], c["origin"]) for c in body["corrections"]] == [
        ("queue", "Network", "Access", "review")
    ]  # priority was already P3: not a correction
    [delivery] = deliveries(engine, "correction")
    assert delivery.payload == {"fields": {"queue": "Access"}, "note": None} and delivery.id == body["delivery_id"]
    [entry] = audit_rows(engine, "label_corrected")
    assert entry.before == {"queue": "Network"} and entry.after and entry.after["queue"] == "Access"
    # Same value again: nothing changes, nothing is sent.
    again = client.post("/api/v1/tickets/1/corrections", json={"fields": {"queue": "Access"}}, headers=h).json()
    assert again == {"corrections": [], "delivery_id": None}
    for bad in ({"queue": "Nonsense"}, {"colour": "red"}):
        assert client.post("/api/v1/tickets/1/corrections", json={"fields": bad}, headers=h).status_code == 422
    with Session(engine) as s:
        assert len(s.exec(select(LabelCorrection)).all()) == 1
    assert len(deliveries(engine, "correction")) == 1


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("", "", 0),
        ("abc", "abc", 0),
        ("kitten", "sitting", 3),
        ("", "hello", 5),
        ("Hello there", "Hello here", 1),
        ("flaw", "lawn", 2),
    ],
)
def test_edit_distance_is_levenshtein(a: str, b: str, want: int) -> None:
    assert edit_distance(a, b) == want


@pytest.mark.parametrize("statement", ["UPDATE audit_entry SET actor = 'mallory'", "DELETE FROM audit_entry"])
def test_the_audit_log_refuses_updates_and_deletes(
    client: TestClient, engine: Engine, accounts: Accounts, statement: str
) -> None:
    """T25: history cannot be rewritten, whatever code path tries (enforced by the database)."""
    sid = seed_suggestion(engine)
    client.post(f"/api/v1/suggestions/{sid}/approve", json={}, headers=accounts.headers("agent"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    assert [(a.actor, a.action) for a in audit_rows(engine)] == [("agent", "approved")]


def test_a_random_review_session_leaves_exactly_one_audit_row_per_change(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    """T25: replay a seeded random mix of decisions; every change and every conflict has one row, refusals none."""
    import random

    rng = random.Random(25)
    sids = [seed_suggestion(engine) for _ in range(6)]
    expected: dict[str, int] = {}
    for _ in range(60):
        who = rng.choice(["agent", "admin", "viewer"])
        sid = rng.choice(sids)
        kind = rng.choice(["approve", "reject", "correct"])
        if kind == "correct":
            body = {"fields": {"queue": rng.choice(["Network", "Access", "Hardware"])}}
            resp = client.post(f"/api/v1/tickets/{sid}/corrections", json=body, headers=accounts.headers(who))
            if resp.status_code == 200 and resp.json()["corrections"]:
                expected["label_corrected"] = expected.get("label_corrected", 0) + 1
        else:
            body = {"version": rng.choice([0, 1, None])}
            if kind == "reject":
                body["reason"] = "not helpful"
            resp = client.post(f"/api/v1/suggestions/{sid}/{kind}", json=body, headers=accounts.headers(who))
            action = {200: "approved" if kind == "approve" else "rejected", 409: "conflict"}.get(resp.status_code)
            if action:
                expected[action] = expected.get(action, 0) + 1
        assert resp.status_code in (200, 403, 409), resp.text
        assert (resp.status_code == 403) == (who == "viewer")
    actual: dict[str, int] = {}
    for row in audit_rows(engine):
        actual[row.action] = actual.get(row.action, 0) + 1
    assert actual == expected
    assert expected.get("conflict", 0) > 0 and expected.get("label_corrected", 0) > 0  # the mix covered both
    assert len(deliveries(engine, "reply")) == expected.get("approved", 0)
