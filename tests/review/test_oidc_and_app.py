"""OIDC single sign-on against a scripted identity provider, and the review mount inside create_app."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.domain.tables import User
from service.settings import Settings
from tests.review.conftest import PASSWORD, add_user, audit_rows, build_app

ISSUER = "https://idp.example"


class Provider:
    """An identity provider speaking the OIDC discovery, token and userinfo endpoints over an httpx transport."""

    def __init__(self, sub: str, username: str) -> None:
        self.sub, self.username, self.codes = sub, username, {"good-code"}
        self.token_requests: list[dict[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "token_endpoint": f"{ISSUER}/token",
                    "userinfo_endpoint": f"{ISSUER}/userinfo",
                },
            )
        if request.url.path == "/token":
            form = parse_qs(request.content.decode())
            self.token_requests.append(form)
            if form.get("code") != ["good-code"] or form.get("client_secret") != ["idp-secret"]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(200, json={"access_token": "at-1", "token_type": "Bearer"})
        if request.url.path == "/userinfo" and request.headers.get("authorization") == "Bearer at-1":
            return httpx.Response(200, json={"sub": self.sub, "preferred_username": self.username})
        return httpx.Response(401)


def sso_client(settings: Settings, engine: Engine, provider: Provider) -> TestClient:
    """A client of an app with OIDC configured and the provider plugged in."""
    review = settings.review.model_copy(
        update={"oidc_issuer": ISSUER, "oidc_client_id": "triage", "oidc_client_secret": SecretStr("idp-secret")}
    )
    app = build_app(settings.model_copy(update={"review": review}), engine)
    app.state.oidc_transport = httpx.MockTransport(provider)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def sign_in(client: TestClient, *, code: str = "good-code", state: str | None = None) -> httpx.Response:
    """Start SSO, then come back from the provider with `code` (and the real or a forged state)."""
    start = client.get("/review/oidc/login", params={"next": "/review/dashboard"})
    assert start.status_code == 303
    target = urlsplit(start.headers["location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{ISSUER}/authorize"
    assert query["redirect_uri"] == ["https://testserver/review/oidc/callback"] and query["client_id"] == ["triage"]
    return client.get("/review/oidc/callback", params={"code": code, "state": state or query["state"][0]})


def test_sso_provisions_a_viewer_and_logs_them_in(settings: Settings, engine: Engine) -> None:
    provider = Provider("sub-123", "alice")
    with sso_client(settings, engine, provider) as client:
        done = sign_in(client)
        assert done.status_code == 303 and done.headers["location"] == "/review/dashboard"
        assert client.get("/review/dashboard").status_code == 200
        assert client.get("/review/audit").status_code == 403  # new SSO users are viewers
    with sso_client(settings, engine, provider) as again:
        assert sign_in(again).status_code == 303
    with Session(engine) as s:
        users = s.exec(select(User)).all()
    assert [(u.username, u.role, u.oidc_subject, u.password_hash) for u in users] == [
        ("alice", "viewer", "sub-123", None)
    ]
    assert [a.action for a in audit_rows(engine)] == ["user_provisioned", "login", "login"]


def test_sso_never_takes_over_a_local_account_with_the_same_name(settings: Settings, engine: Engine) -> None:
    add_user(engine, "alice", "admin", password=PASSWORD)
    with sso_client(settings, engine, Provider("sub-evil", "alice")) as client:
        assert sign_in(client).status_code == 303
        assert client.get("/review/audit").status_code == 403
    with Session(engine) as s:
        assert {u.username: u.role for u in s.exec(select(User)).all()} == {"alice": "admin", "oidc:sub-evil": "viewer"}


def test_sso_refuses_a_forged_state_or_a_bad_code(settings: Settings, engine: Engine) -> None:
    with sso_client(settings, engine, Provider("sub-1", "bob")) as client:
        assert sign_in(client, state="forged").status_code == 403
        assert sign_in(client, code="stolen").status_code == 403
        assert client.get("/review/").status_code == 303
    with Session(engine) as s:
        assert s.exec(select(User)).all() == []


def test_sso_is_404_when_not_configured(settings: Settings, engine: Engine) -> None:
    with TestClient(build_app(settings, engine), base_url="https://testserver") as client:
        assert client.get("/review/oidc/login", follow_redirects=False).status_code == 404


def test_create_app_mounts_review_and_its_api(settings: Settings, engine: Engine) -> None:
    from service.api.app import create_app

    app = create_app(settings, engine=engine)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        assert client.get("/review/login").status_code == 200
        assert client.get("/review/").headers["location"].startswith("/review/login")
        assert client.get("/api/v1/me").status_code == 401
        assert "/api/v1/suggestions/{suggestion_id}/approve" in client.get("/openapi.json").json()["paths"]
