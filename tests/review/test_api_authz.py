"""RELIABILITY T24: every review-API endpoint x {anon, viewer, agent, admin, disabled account, expired token}."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.review.conftest import Accounts, audit_rows, deliveries, seed_suggestion

WHO = ("anon", "viewer", "agent", "admin", "disabled", "expired")
# endpoint name -> (method, path template, JSON body, weakest role allowed)
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    "me": ("GET", "/api/v1/me", None, "viewer"),
    "queue": ("GET", "/api/v1/suggestions", None, "viewer"),
    "suggestion": ("GET", "/api/v1/suggestions/{sid}", None, "viewer"),
    "approve": ("POST", "/api/v1/suggestions/{sid}/approve", {"version": 0}, "agent"),
    "reject": ("POST", "/api/v1/suggestions/{sid}/reject", {"version": 0, "reason": "wrong product"}, "agent"),
    "correct": ("POST", "/api/v1/tickets/{tid}/corrections", {"fields": {"queue": "Access"}}, "agent"),
    "stats": ("GET", "/api/v1/stats", None, "viewer"),
    "audit": ("GET", "/api/v1/audit", None, "admin"),
    "users": ("GET", "/api/v1/users", None, "admin"),
    "patch_user": ("PATCH", "/api/v1/users/{uid}", {"role": "agent"}, "admin"),
}
RANK = {"viewer": 0, "agent": 1, "admin": 2}


def expected_status(who: str, weakest: str) -> int:
    """The specification: 401 without valid credentials, 403 when the role is too weak, else 200."""
    if who in ("anon", "disabled", "expired"):
        return 401
    return 200 if RANK[who] >= RANK[weakest] else 403


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("who", WHO)
def test_api_answers_each_role_as_specified(
    client: TestClient, engine: Engine, accounts: Accounts, endpoint: str, who: str
) -> None:
    method, template, body, weakest = ENDPOINTS[endpoint]
    sid = seed_suggestion(engine)
    audit_before = len(audit_rows(engine))
    resp = client.request(method, template.format(sid=sid, tid=1, uid=1), json=body, headers=accounts.headers(who))
    want = expected_status(who, weakest)
    assert resp.status_code == want, resp.text
    if want == 401:
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["error"] in {"unauthenticated", "token_expired", "account_disabled"}
    if want != 200 and method != "GET":
        assert deliveries(engine) == [] and len(audit_rows(engine)) == audit_before  # a refusal changes nothing
    if want == 200 and method != "GET":
        assert len(audit_rows(engine)) == audit_before + 1  # T25: one audit row per state change


@pytest.mark.parametrize("endpoint", ["suggestion", "approve", "reject", "correct", "patch_user"])
def test_unknown_ids_are_404_for_allowed_roles_and_403_for_weaker(
    client: TestClient, engine: Engine, accounts: Accounts, endpoint: str
) -> None:
    method, template, body, weakest = ENDPOINTS[endpoint]
    path = template.format(sid=999, tid=999, uid=999)
    assert client.request(method, path, json=body, headers=accounts.headers("admin")).status_code == 404
    if weakest != "viewer":
        assert client.request(method, path, json=body, headers=accounts.headers("viewer")).status_code == 403
    assert client.request(method, path, json=body).status_code == 401


def test_a_malformed_or_unknown_token_is_401(client: TestClient, accounts: Accounts) -> None:
    for header in ("Bearer", "Bearer itsm_nope", "Basic dXNlcjpwYXNz", accounts.tokens["admin"]):
        resp = client.get("/api/v1/me", headers={"Authorization": header})
        assert resp.status_code == 401, header


def test_the_api_is_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for _method, template, _body, _role in ENDPOINTS.values():
        path = template.replace("{sid}", "{suggestion_id}").replace("{tid}", "{ticket_id}")
        assert path.replace("{uid}", "{user_id}") in paths
    assert not any(p.startswith("/review") for p in paths)  # HTML pages are not API


def test_admins_manage_roles_but_never_remove_the_last_admin(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    h = accounts.headers("admin")
    listed = {u["username"]: u for u in client.get("/api/v1/users", headers=h).json()}
    assert listed["viewer"] == {
        "id": 1,
        "username": "viewer",
        "role": "viewer",
        "disabled": False,
        "sso": False,
        "api_tokens": 1,
    }
    assert "password_hash" not in client.get("/api/v1/users", headers=h).text
    promoted = client.patch("/api/v1/users/1", json={"role": "agent"}, headers=h).json()
    assert promoted["role"] == "agent"
    sid = seed_suggestion(engine)
    assert (
        client.post(
            f"/api/v1/suggestions/{sid}/reject", json={"reason": "x"}, headers=accounts.headers("viewer")
        ).status_code
        == 200
    )  # the new role applies at once
    assert client.patch("/api/v1/users/5", json={"disabled": True}, headers=h).status_code == 200  # other admin
    assert client.patch("/api/v1/users/3", json={"disabled": True}, headers=h).status_code == 409  # now the last
    assert client.patch("/api/v1/users/1", json={"disabled": True}, headers=h).status_code == 200
    assert client.get("/api/v1/me", headers=accounts.headers("viewer")).status_code == 401
    assert [(a.action, a.target_id) for a in audit_rows(engine) if a.action != "rejected"] == [
        ("role_changed", "viewer"),
        ("user_disabled", "expired"),
        ("user_disabled", "viewer"),
    ]
