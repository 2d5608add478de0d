"""A ticket whose labels are out but whose draft is still being prepared shows as such, in the UI and the API, and
turns into a normal queue row when the draft arrives."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import Suggestion, Ticket, Triage
from tests.review.conftest import PASSWORD, Accounts, add_user
from tests.review.test_ui import login

PREDICTIONS = {"queue": {"label": "Network", "confidence": 0.8, "probabilities": {"Network": 0.8, "Other": 0.2}}}


def _labelled(engine: Engine, key: str, draft_status: str, error: str | None = None) -> int:
    """A ticket and its triage as the first stage stores them (no suggestion yet)."""
    with Session(engine) as s:
        ticket = Ticket(source="jira", external_id=key, external_key=key, subject=f"Subject of {key}", body="x")
        s.add(ticket)
        s.flush()
        triage = Triage(
            ticket_id=int(ticket.id or 0), predictions=PREDICTIONS, draft_status=draft_status, draft_error=error
        )
        s.add(triage)
        s.commit()
        return int(triage.id or 0)


def test_drafts_in_preparation_are_listed_and_the_page_refreshes_until_they_arrive(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    waiting = _labelled(engine, "SUP-1", "pending")
    _labelled(engine, "SUP-2", "failed", error="FakeLLMError: gave up")
    add_user(engine, "ann", "viewer", password=PASSWORD)
    login(client, "ann")
    page = client.get("/review/").text
    assert "Drafts in preparation (2)" in page and "SUP-1" in page and "waiting" in page
    assert "FakeLLMError: gave up" in page and '<meta http-equiv="refresh" content="10">' in page
    api = client.get("/api/v1/suggestions", headers=accounts.headers("viewer")).json()
    assert {p["external_key"]: p["draft_status"] for p in api["preparing"]} == {"SUP-1": "pending", "SUP-2": "failed"}
    assert api["preparing"][1]["labels"] == {"queue": "Network"} and api["preparing_total"] == 2
    with Session(engine) as s:  # the draft arrives
        triage = s.get(Triage, waiting)
        assert triage is not None
        triage.draft_status = "ready"
        s.add(triage)
        s.add(Suggestion(triage_id=waiting, ticket_id=triage.ticket_id, draft="Hello, we are on it."))
        s.commit()
    page = client.get("/review/").text
    assert "Drafts in preparation (1)" in page and "refresh" in page
    assert '<meta http-equiv="refresh"' not in page  # only a failed one is left: nothing to wait for
    api = client.get("/api/v1/suggestions", headers=accounts.headers("viewer")).json()
    assert [i["external_key"] for i in api["items"]] == ["SUP-1"] and api["preparing_total"] == 1
