"""The first-day dashboard: fields in shadow mode show their precision, overall and at the field's threshold."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import Suggestion, Triage
from service.settings import FieldPolicy, Settings
from tests.review.conftest import PASSWORD, Accounts, add_user, build_app, seed_suggestion
from tests.review.test_ui import login

SHADOW = {"decision": "shadow", "reason": "shadow mode"}


def preds(confidence: float) -> dict[str, dict[str, object]]:
    return {
        "queue": {
            "label": "Network",
            "confidence": confidence,
            "probabilities": {"Network": confidence, "Access": 1 - confidence},
        },
        "priority": {"label": "P3", "confidence": 0.55, "probabilities": {"P3": 0.55, "P2": 0.45}},
    }


@pytest.fixture
def shadow_client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The review app with queue and priority in shadow mode (queue threshold 0.9)."""
    policy = {"queue": FieldPolicy(mode="shadow", threshold=0.9), "priority": FieldPolicy(mode="shadow")}
    app = build_app(settings.model_copy(update={"policy": policy}), engine)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def test_dashboard_shows_shadow_precision_per_field_and_at_its_threshold(
    shadow_client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    ids = [seed_suggestion(engine, predictions=preds(c)) for c in (0.95, 0.97, 0.6, 0.62)]
    with Session(engine) as s:
        for sid in ids:
            sug = s.get(Suggestion, sid)
            assert sug is not None
            triage = s.get(Triage, sug.triage_id)
            assert triage is not None
            triage.decisions = {"queue": SHADOW, "priority": SHADOW}
            s.add(triage)
        s.commit()
    h = accounts.headers("agent")
    for sid in ids:
        assert shadow_client.post(f"/api/v1/suggestions/{sid}/approve", json={}, headers=h).status_code == 200
    for ticket in (3, 4):  # the two unsure queue predictions were wrong
        r = shadow_client.post(f"/api/v1/tickets/{ticket}/corrections", json={"fields": {"queue": "Access"}}, headers=h)
        assert r.status_code == 200, r.text
    seed_suggestion(engine, predictions=preds(0.99))  # not reviewed yet: not counted

    api = shadow_client.get("/api/v1/stats", params={"days": 7}, headers=accounts.headers("viewer")).json()
    assert api["total"]["shadow_reviewed"] == {"queue": 4, "priority": 4}
    assert api["total"]["shadow_precision"] == {"queue": 0.5, "priority": 1.0}

    add_user(engine, "watcher", "viewer", password=PASSWORD)
    login(shadow_client, "watcher")
    page = shadow_client.get("/review/dashboard?days=7").text
    row = {
        f: re.search(rf'<tr data-field="{f}">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
        for f in ("queue", "priority")
    }
    cells = {f: re.findall(r"<td[^>]*>(.*?)</td>", row[f], re.S) for f in row}
    assert cells["queue"] == ["queue", "shadow, threshold 0.90", "4", "50%", "100%", "50%"]
    assert cells["priority"] == ["priority", "shadow, threshold 0.90", "4", "100%", "–", "0%"]
    assert "Fields in shadow mode" in page and "ITSM_POLICY" in page
