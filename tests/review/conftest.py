"""Review test fixtures: an app wired like create_app, seeded tickets/suggestions, users and API tokens per role."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service import review
from service.domain.tables import ApiToken, AuditEntry, Delivery, Suggestion, Ticket, Triage, User
from service.queue import make_celery
from service.review.security import hash_api_token, hash_password, new_api_token
from service.settings import Settings

ROLES = ("viewer", "agent", "admin")
PASSWORD = "correct horse battery"
PREDICTIONS = {
    "queue": {
        "label": "Network",
        "confidence": 0.82,
        "probabilities": {"Network": 0.82, "Access": 0.1, "Hardware": 0.08},
    },
    "priority": {"label": "P3", "confidence": 0.55, "probabilities": {"P2": 0.3, "P3": 0.55, "P4": 0.15}},
}


def build_app(settings: Settings, engine: Engine) -> FastAPI:
    """What create_app sets up for review: settings, engine and celery on app.state, then mount()."""
    app = FastAPI(title="review-test")
    app.state.settings = settings
    app.state.engine = engine
    app.state.celery = make_celery(settings)
    review.mount(app, settings)
    return app


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    """The review app over the test database (SQLite and PostgreSQL)."""
    return build_app(settings, engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTPS test client (the session cookie is Secure) that does not follow redirects."""
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


def seed_suggestion(
    engine: Engine,
    *,
    subject: str = "VPN drops every 10 minutes",
    body: str = "Since this morning the VPN disconnects.\nPlease help.",
    source: str = "jira",
    key: str | None = None,
    draft: str = "Hello, thanks for reporting this. We are looking into the VPN disconnects.",
    predictions: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    flags: list[str] | None = None,
) -> int:
    """Insert a ticket, its triage and a pending suggestion; return the suggestion id."""
    with Session(engine, expire_on_commit=False) as s:
        n = len(s.exec(select(Ticket.id)).all()) + 1
        key = key or f"SUP-{n}"
        ticket = Ticket(
            source=source,
            external_id=f"{10000 + n}",
            external_key=key,
            subject=subject,
            body=body,
            url=f"https://example.atlassian.net/browse/{key}",
            reporter="alice@example.com",
        )
        s.add(ticket)
        s.flush()
        assert ticket.id is not None
        triage = Triage(
            ticket_id=ticket.id,
            source_version=1,
            predictions=predictions or PREDICTIONS,
            decisions={
                "queue": {"decision": "auto", "reason": "confidence 0.82 >= threshold 0.80"},
                "priority": {"decision": "suggest", "reason": "suggest mode"},
            },
            draft_reply=draft,
            flags=flags or [],
            model_version="test",
        )
        s.add(triage)
        s.flush()
        assert triage.id is not None
        sug = Suggestion(triage_id=triage.id, ticket_id=ticket.id, draft=draft)
        if created_at is not None:
            sug.created_at = created_at
        s.add(sug)
        s.commit()
        assert sug.id is not None
        return sug.id


@dataclass
class Accounts:
    """Users per role plus special ones, each with an API token."""

    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        """Authorization header for `who` (anon: none)."""
        return {} if who == "anon" else {"Authorization": f"Bearer {self.tokens[who]}"}


def add_user(
    engine: Engine,
    username: str,
    role: str,
    *,
    password: str | None = None,
    disabled: bool = False,
    token_expires: datetime | None = None,
) -> str:
    """Create a user (optionally with a password) and an API token; return the token."""
    token = new_api_token()
    with Session(engine) as s:
        user = User(
            username=username, role=role, disabled=disabled, password_hash=hash_password(password) if password else None
        )
        s.add(user)
        s.flush()
        assert user.id is not None
        s.add(
            ApiToken(
                user_id=user.id,
                token_hash=hash_api_token(token),
                name="test",
                expires_at=token_expires or datetime.now(UTC) + timedelta(days=1),
            )
        )
        s.commit()
    return token


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    """viewer / agent / admin, a disabled admin, and an admin whose token expired an hour ago."""
    tokens = {role: add_user(engine, role, role) for role in ROLES}
    tokens["disabled"] = add_user(engine, "disabled", "admin", disabled=True)
    tokens["expired"] = add_user(engine, "expired", "admin", token_expires=datetime.now(UTC) - timedelta(hours=1))
    return Accounts(tokens)


def audit_rows(engine: Engine, action: str | None = None) -> list[AuditEntry]:
    """Audit rows, oldest first, optionally of one action."""
    with Session(engine) as s:
        q = select(AuditEntry).order_by(AuditEntry.id)  # type: ignore[arg-type]
        if action:
            q = q.where(AuditEntry.action == action)
        return list(s.exec(q).all())


def deliveries(engine: Engine, kind: str | None = None) -> list[Delivery]:
    """Outbox rows, oldest first."""
    with Session(engine) as s:
        q = select(Delivery).order_by(Delivery.id)  # type: ignore[arg-type]
        if kind:
            q = q.where(Delivery.kind == kind)
        return list(s.exec(q).all())


def suggestion(engine: Engine, suggestion_id: int) -> Suggestion:
    """Reload a suggestion."""
    with Session(engine) as s:
        row = s.get(Suggestion, suggestion_id)
        assert row is not None
        return row


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app served by a real uvicorn on a free localhost port (for parallel clients)."""
    with serve(app) as url:
        yield url


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with a real uvicorn in a thread on a free localhost port; yields the base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Tell reviewers where the browser tests left their screenshots."""
    folder = Path(__file__).resolve().parents[2] / "test-artifacts" / "review"
    shots = sorted(folder.glob("*.png")) if folder.exists() else []
    if shots:
        terminalreporter.write_line(f"review screenshots ({len(shots)}): {folder}")
