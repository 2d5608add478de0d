"""The HTML review UI over HTTP: login, sessions, CSRF on every form, roles, escaping, conflicts."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from service.review.auth import COOKIE_NAME
from tests.review.conftest import PASSWORD, add_user, audit_rows, deliveries, seed_suggestion, suggestion

XSS = "<img src=x onerror=alert(1)>"


def csrf_of(html: str) -> str:
    """The CSRF token embedded in a page's forms."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the CSRF token of the new session."""
    token = csrf_of(client.get("/review/login").text)
    resp = client.post("/review/login", data={"username": username, "password": password, "csrf_token": token})
    assert resp.status_code == 303, resp.text
    return csrf_of(client.get("/review/").text)


@pytest.fixture
def people(engine: Engine) -> None:
    """One password account per role."""
    for role in ("viewer", "agent", "admin"):
        add_user(engine, role, role, password=PASSWORD)


def test_login_sets_a_hardened_cookie_and_rotates_the_csrf_token(client: TestClient, people: None) -> None:
    anon_page = client.get("/review/login")
    anon_token = csrf_of(anon_page.text)
    resp = client.post(
        "/review/login",
        data={"username": "agent", "password": PASSWORD, "csrf_token": anon_token, "next": "/review/dashboard"},
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/review/dashboard"
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    assert csrf_of(client.get("/review/").text) != anon_token  # no session fixation


def test_a_wrong_password_is_refused_and_audited(client: TestClient, engine: Engine, people: None) -> None:
    token = csrf_of(client.get("/review/login").text)
    resp = client.post("/review/login", data={"username": "agent", "password": "nope-nope", "csrf_token": token})
    assert resp.status_code == 401 and "Invalid username or password" in resp.text
    assert client.get("/review/").status_code == 303
    assert [a.action for a in audit_rows(engine)] == ["login_failed"]


def test_the_login_form_without_its_csrf_token_is_refused(client: TestClient, people: None) -> None:
    client.get("/review/login")
    resp = client.post("/review/login", data={"username": "agent", "password": PASSWORD})
    assert resp.status_code == 403 and "csrf_failed" in resp.text


def test_only_local_paths_are_followed_after_login(client: TestClient, people: None) -> None:
    token = csrf_of(client.get("/review/login").text)
    resp = client.post(
        "/review/login",
        data={"username": "agent", "password": PASSWORD, "csrf_token": token, "next": "https://evil.example/review"},
    )
    assert resp.headers["location"] == "/review/"


PAGES = {
    "queue": ("/review/", "viewer"),
    "ticket": ("/review/suggestions/1", "viewer"),
    "dashboard": ("/review/dashboard", "viewer"),
    "audit": ("/review/audit", "admin"),
    "users": ("/review/users", "admin"),
}
RANK = {"viewer": 0, "agent": 1, "admin": 2}


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("who", ["anon", "viewer", "agent", "admin", "disabled"])
def test_pages_answer_each_role_as_specified(
    client: TestClient, engine: Engine, people: None, page: str, who: str
) -> None:
    seed_suggestion(engine)
    path, weakest = PAGES[page]
    if who == "disabled":
        add_user(engine, "gone", "admin", password=PASSWORD)
        login(client, "gone")
        from sqlmodel import Session, select

        from service.domain.tables import User

        with Session(engine) as s:  # disabled after logging in: the live session must stop working at once
            user = s.exec(select(User).where(User.username == "gone")).one()
            user.disabled = True
            s.add(user)
            s.commit()
    elif who != "anon":
        login(client, who)
    resp = client.get(path)
    if who in ("anon", "disabled"):
        assert resp.status_code == 303 and resp.headers["location"].startswith("/review/login?next=")
    elif RANK[who] >= RANK[weakest]:
        assert resp.status_code == 200
        assert "unsafe-inline" not in resp.headers["content-security-policy"]
    else:
        assert resp.status_code == 403


FORMS = {
    "approve": {"version": "0", "reply": "Fixed, please retry."},
    "reject": {"version": "0", "reason": "off"},
    "corrections": {"label:queue": "Access"},
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("who", ["anon", "viewer", "agent", "agent-no-csrf", "agent-wrong-csrf", "admin"])
def test_forms_answer_each_role_and_need_the_csrf_token(
    client: TestClient, engine: Engine, people: None, form: str, who: str
) -> None:
    sid = seed_suggestion(engine)
    token = login(client, who.split("-")[0]) if who != "anon" else ""
    data = dict(FORMS[form])
    if who == "agent-wrong-csrf":
        data["csrf_token"] = token[::-1]
    elif who != "agent-no-csrf":
        data["csrf_token"] = token
    audit_before = len(audit_rows(engine))
    resp = client.post(f"/review/suggestions/{sid}/{form}", data=data)
    want = {"anon": 401, "viewer": 403, "agent-no-csrf": 403, "agent-wrong-csrf": 403}.get(who, 303)
    assert resp.status_code == want, resp.text
    if want == 303:
        assert len(audit_rows(engine)) == audit_before + 1
    else:
        assert len(audit_rows(engine)) == audit_before and deliveries(engine) == []
        assert suggestion(engine, sid).status == "pending"


def test_a_reply_from_the_ticket_memory_is_marked_as_such(client: TestClient, engine: Engine, people: None) -> None:
    """A past reply to a similar ticket may name other products or people: the agent is told where it came from."""
    drafted = seed_suggestion(engine)
    retrieved = seed_suggestion(engine, flags=["reply_from_history"])
    login(client, "agent")
    assert 'id="reply-origin"' not in client.get(f"/review/suggestions/{drafted}").text
    page = client.get(f"/review/suggestions/{retrieved}").text
    assert 'id="reply-origin"' in page and "similar earlier ticket" in page


def test_edit_and_approve_from_the_ticket_page(client: TestClient, engine: Engine, people: None) -> None:
    sid = seed_suggestion(engine, draft="Please restart the VPN client.")
    login(client, "agent")
    page = client.get(f"/review/suggestions/{sid}").text
    assert "Please restart the VPN client." in page and 'name="version" value="0"' in page
    reply = "Please restart the VPN client and tell us if it drops again."
    resp = client.post(
        f"/review/suggestions/{sid}/approve", data={"csrf_token": csrf_of(page), "version": "0", "reply": reply}
    )
    assert resp.status_code == 303
    [delivery] = deliveries(engine, "reply")
    assert delivery.payload == {"public_reply": reply, "suggestion_id": sid}
    assert suggestion(engine, sid).edit_distance == len(" and tell us if it drops again")
    assert "Done: approved" in client.get(resp.headers["location"]).text


def test_a_second_agent_on_a_stale_page_gets_a_conflict_page(
    app: object, client: TestClient, engine: Engine, people: None
) -> None:
    sid = seed_suggestion(engine)
    other = TestClient(client.app, base_url="https://testserver", follow_redirects=False)
    first, second = login(client, "agent"), login(other, "admin")
    assert (
        client.post(
            f"/review/suggestions/{sid}/approve", data={"csrf_token": first, "version": "0", "reply": "A"}
        ).status_code
        == 303
    )
    resp = other.post(f"/review/suggestions/{sid}/approve", data={"csrf_token": second, "version": "0", "reply": "B"})
    assert resp.status_code == 409 and "Another agent already decided" in resp.text
    assert len(deliveries(engine, "reply")) == 1 and suggestion(engine, sid).final_reply == "A"
    assert [a.action for a in audit_rows(engine) if a.action not in ("login",)] == ["approved", "conflict"]


def test_hostile_ticket_text_is_escaped_and_unsafe_links_dropped(
    client: TestClient, engine: Engine, people: None
) -> None:
    sid = seed_suggestion(engine, subject=XSS, body='<script>alert("b")</script>', draft="<b>hi</b>")
    from sqlmodel import Session

    from service.domain.tables import Ticket

    with Session(engine) as s:
        ticket = s.get(Ticket, 1)
        assert ticket is not None
        ticket.url = "javascript:alert(1)"
        s.add(ticket)
        s.commit()
    login(client, "agent")
    for path in ("/review/", f"/review/suggestions/{sid}"):
        html = client.get(path).text
        assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<script>" not in html and "javascript:" not in html


def test_logout_needs_csrf_and_ends_the_session(client: TestClient, engine: Engine, people: None) -> None:
    token = login(client, "viewer")
    assert client.post("/review/logout", data={}).status_code == 403
    resp = client.post("/review/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and f"{COOKIE_NAME}=" in resp.headers["set-cookie"]
    assert client.get("/review/").status_code == 303
    assert [a.action for a in audit_rows(engine)] == ["login", "logout"]


def test_a_forged_session_cookie_is_ignored(client: TestClient, engine: Engine, people: None) -> None:
    login(client, "viewer")
    value = client.cookies.get(COOKIE_NAME)
    assert value
    body, sig = value.rsplit(".", 1)
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, value)
    assert client.get("/review/").status_code == 200  # the genuine cookie, set the same way, works
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, body + "." + sig[::-1])
    assert client.get("/review/").status_code == 303


def test_the_queue_page_filters_by_source_field_value_and_confidence_percent(
    client: TestClient, engine: Engine, people: None
) -> None:
    low = {"queue": {"label": "Access", "confidence": 0.4, "probabilities": {"Access": 0.4, "Network": 0.6}}}
    seed_suggestion(engine, subject="jira network", source="jira")
    seed_suggestion(engine, subject="sn access low", source="servicenow", predictions=low)
    login(client, "viewer")

    def rows(**params: str) -> list[str]:
        html = client.get("/review/", params=params).text
        return [t for t in re.findall(r'<a href="/review/suggestions/\d+">([^<]+)</a></td>', html) if not t.isdigit()]

    assert rows() == ["sn access low", "jira network"]
    assert rows(source="jira") == ["jira network"]
    assert rows(field="queue", value="Access") == ["sn access low"]
    assert rows(field="queue", max_conf="50") == ["sn access low"]  # percent or fraction both work
    assert rows(field="queue", min_conf="0.5") == ["jira network"]
    assert rows(status="approved") == []
    assert client.get("/review/", params={"status": "nonsense"}).status_code == 422


def test_repeated_wrong_passwords_lock_that_username_only(client: TestClient, engine: Engine, people: None) -> None:
    from service.review.login import LOCKOUT_FAILURES

    token = csrf_of(client.get("/review/login").text)
    for _ in range(LOCKOUT_FAILURES):
        resp = client.post("/review/login", data={"username": "agent", "password": "guess", "csrf_token": token})
        assert resp.status_code == 401
    right = {"username": "agent", "password": PASSWORD, "csrf_token": token}
    assert client.post("/review/login", data=right).status_code == 429  # even the right password now
    assert client.get("/review/").status_code == 303
    login(client, "viewer")  # other accounts are unaffected
    failed = audit_rows(engine, "login_failed")
    assert len(failed) == LOCKOUT_FAILURES + 1 and failed[-1].after == {"locked": True}


def test_only_known_outcomes_are_echoed_in_the_banner(client: TestClient, engine: Engine, people: None) -> None:
    sid = seed_suggestion(engine)
    login(client, "viewer")
    assert "Done: approved" in client.get(f"/review/suggestions/{sid}", params={"done": "approved"}).text
    spoof = client.get(f"/review/suggestions/{sid}", params={"done": "call 555-0100 to unlock"}).text
    assert "555-0100" not in spoof and "Done:" not in spoof


def test_admin_changes_a_role_on_the_users_page(client: TestClient, engine: Engine, people: None) -> None:
    token = login(client, "admin")
    page = client.get("/review/users").text
    assert "viewer" in page and "password_hash" not in page
    assert client.post("/review/users/1", data={"role": "agent"}).status_code == 403  # no CSRF token
    assert client.post("/review/users/1", data={"role": "agent", "csrf_token": token}).status_code == 303
    last = client.post("/review/users/3", data={"role": "viewer", "csrf_token": token})
    assert last.status_code == 409 and "no active admin" in last.text
    assert [(a.action, a.after) for a in audit_rows(engine) if a.action == "role_changed"] == [
        ("role_changed", {"role": "agent"})
    ]
    other = TestClient(client.app, base_url="https://testserver", follow_redirects=False)
    agent_token = login(other, "agent")
    assert other.post("/review/users/1", data={"role": "admin", "csrf_token": agent_token}).status_code == 403
