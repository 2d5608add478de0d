"""The ticket page and GET /api/v1/suggestions/{id} show similar earlier tickets and the articles the draft cites;
the dashboard shows how often drafts cite one and how those fare."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import Suggestion, SuggestionStatus
from service.review import dashboard
from tests.review.conftest import PASSWORD, Accounts, add_user, seed_suggestion
from tests.review.evidence_seed import seed_evidence
from tests.review.test_ui import login


def test_the_api_returns_similar_tickets_and_cited_sources(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    seeded = seed_evidence(engine)
    body = client.get(f"/api/v1/suggestions/{seeded.suggestion_id}", headers=accounts.headers("viewer")).json()
    keys = [t["key"] for t in body["similar"]]
    assert keys[0] == seeded.reviewed_key and seeded.unrelated_key not in keys and "ITSD-42" not in keys
    first = body["similar"][0]
    assert first["reviewed"] and first["labels"]["queue"] == "Remote Access" and first["labels"]["priority"] == "P3"
    assert first["reply"].startswith("Your password had expired")
    assert first["url"] == "https://example.atlassian.net/browse/ITSD-7"
    assert [s["number"] for s in body["sources"]] == seeded.cited_numbers
    assert body["sources"][0]["number"] == "KB0010001" and "GlobalProtect" in body["sources"][0]["passage"]
    assert body["sources"][0]["url"].startswith("https://acme.service-now.com/kb_view.do")

    # A suggestion drafted before sources were recorded says so (null), not "no source" ([]).
    other = seed_suggestion(engine, subject="Unrelated", body="Nothing alike.")
    plain = client.get(f"/api/v1/suggestions/{other}", headers=accounts.headers("viewer")).json()
    assert plain["sources"] is None and plain["similar"] == []


def test_the_ticket_page_shows_the_evidence(client: TestClient, engine: Engine) -> None:
    seeded = seed_evidence(engine)
    add_user(engine, "viewer", "viewer", password=PASSWORD)
    login(client, "viewer")
    html = client.get(f"/review/suggestions/{seeded.suggestion_id}").text
    section = html[html.index('id="evidence"') :]
    assert 'href="https://example.atlassian.net/browse/ITSD-7"' in section and "Remote Access" in section
    assert "Your password had expired" in section
    assert re.search(r'href="https://acme.service-now.com/kb_view.do\?sysparm_article=KB0010001"', section)
    assert '<blockquote class="passage">' in section


def test_a_source_link_that_is_not_http_is_not_rendered_as_a_link(client: TestClient, engine: Engine) -> None:
    sid = seed_suggestion(engine)
    with Session(engine) as s:
        row = s.get(Suggestion, sid)
        assert row is not None
        row.sources = [{"title": "<b>x</b>", "url": "javascript:alert(1)", "number": "KB1", "passage": "<i>p</i>"}]
        s.add(row)
        s.commit()
    add_user(engine, "viewer", "viewer", password=PASSWORD)
    login(client, "viewer")
    html = client.get(f"/review/suggestions/{sid}").text
    assert "javascript:alert" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;i&gt;p&lt;/i&gt;" in html


def test_the_dashboard_compares_acceptance_with_and_without_a_source(engine: Engine) -> None:
    plan = [(True, "delivered"), (True, "delivered"), (True, "rejected"), (False, "rejected"), (False, "delivered")]
    for grounded, status in plan:
        sid = seed_suggestion(engine)
        with Session(engine) as s:
            row = s.get(Suggestion, sid)
            assert row is not None
            row.sources = [{"kind": "kb", "title": "t", "passage": "p"}] if grounded else []
            row.status = SuggestionStatus(status)
            row.decided_at = datetime.now(UTC)
            s.add(row)
            s.commit()
    seed_suggestion(engine)  # pending: not counted
    with Session(engine) as s:
        total = dashboard.compute(s, days=7).total
    assert (total.recorded, total.grounded) == (5, 3)
    assert total.source_share == 0.6
    assert abs((total.acceptance_with_source or 0) - 2 / 3) < 1e-9 and total.acceptance_without_source == 0.5
