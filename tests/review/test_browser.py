"""Real-browser tests: headless Debian Chromium driven by Playwright against a live uvicorn server.

Screenshots of the queue and ticket pages go to test-artifacts/review/ (gitignored) for reviewers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import Delivery, Suggestion
from service.settings import Settings
from tests.fakes.fake_jira import FakeJira
from tests.review.conftest import PASSWORD, add_user, audit_rows, build_app, deliveries, seed_suggestion, serve

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "review"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = "<img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium "
        "(apt-get install -y chromium; browsers are never downloaded)",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (a fresh context per test keeps cookies apart)."""
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def e2e_settings(settings: Settings, fake_jira: FakeJira) -> Settings:
    """Plain-HTTP localhost cookies, and Jira write-back pointed at the fake Jira."""
    jira = settings.jira.model_copy(
        update=Settings(jira=fake_jira.settings()).jira.model_dump(include={"base_url", "email", "api_token"})
    )
    review = settings.review.model_copy(update={"cookie_secure": False})
    return settings.model_copy(update={"jira": jira, "review": review})


@pytest.fixture
def site(e2e_settings: Settings, engine: Engine) -> Iterator[str]:
    """The review app on a real port, with one password account per role."""
    for role in ("viewer", "agent", "admin"):
        add_user(engine, role, role, password=PASSWORD)
    with serve(build_app(e2e_settings, engine)) as url:
        yield url


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page that records every JavaScript dialog (an alert means injected script ran)."""
    context = browser.new_context()
    p = context.new_page()
    p.set_default_timeout(60_000)  # shared 2-core CI machines can be slow; nothing here asserts timing
    p.dialogs = []  # type: ignore[attr-defined]
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    yield p
    context.close()


def log_in(page: Any, site: str, username: str) -> None:
    """Fill and submit the login form like a person."""
    page.goto(f"{site}/review/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/review/")


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot for reviewers and say where."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_agent_logs_in_edits_and_approves_and_the_reply_reaches_jira_once(
    page: Any, site: str, engine: Engine, e2e_settings: Settings, fake_jira: FakeJira
) -> None:
    seed_suggestion(engine, subject="Printer on floor 3 jams", key="SUP-1", source="servicenow")
    sid = seed_suggestion(
        engine,
        subject="VPN drops every 10 minutes",
        source="jira",
        key="ITSD-42",
        draft="Hello, please reinstall the VPN client.",
    )
    with Session(engine) as s:  # the fake Jira's issue id
        row = s.get(Suggestion, sid)
        assert row is not None
        from service.domain.tables import Ticket

        ticket = s.get(Ticket, row.ticket_id)
        assert ticket is not None
        ticket.external_id = "10231"
        s.add(ticket)
        s.commit()

    with deliver_worker(e2e_settings):
        log_in(page, site, "agent")
        assert page.locator("table.queue tbody tr").count() == 2
        shot(page, "queue")
        page.click(f"a[href='/review/suggestions/{sid}'] >> nth=1")
        page.wait_for_url(f"{site}/review/suggestions/{sid}")
        assert page.locator("meter").count() >= 2  # probability bars
        shot(page, "ticket")
        reply = "Hello, please reinstall the VPN client (version 5.2) and reboot once."
        page.fill("textarea#reply", reply)
        page.click("button#approve")
        page.wait_for_url(f"{site}/review/suggestions/{sid}?done=approved")

        [delivery] = deliveries(engine, "reply")
        assert delivery.payload == {"public_reply": reply, "suggestion_id": sid}
        issue = fake_jira.issue("10231")
        deadline = time.monotonic() + 180  # worker start-up (slow on a loaded CI box) plus broker polling
        while time.monotonic() < deadline and not _sent(engine, delivery.id or 0):
            time.sleep(0.3)
    assert _sent(engine, delivery.id or 0), "the worker did not deliver the approved reply"
    public = issue.public_comments()
    assert len(public) == 1
    # The connector appends its idempotency marker (itsm-ref:…) below the text the agent approved.
    assert public[0].plain.startswith(reply + "\n") and "itsm-ref:" in public[0].plain
    # A redelivered message for the same outbox row must not post a second reply.
    from service.connectors import make_writer
    from workers.delivery import DeliveryContext, deliver

    ctx = DeliveryContext(engine, e2e_settings, lambda src: make_writer(src, e2e_settings), lambda *_: None)
    deliver(ctx, delivery.id or 0, redelivered=True)
    assert len(issue.public_comments()) == 1
    page.reload()
    shot(page, "ticket-delivered")
    assert "delivered" in page.inner_text("h1.subject + p.meta")
    assert page.dialogs == []


@contextmanager
def deliver_worker(settings: Settings) -> Iterator[None]:
    """A real `itsm-triage worker --queues deliver` process on the test's database and broker."""
    env = {
        **os.environ,
        "ITSM_DATABASE_URL": settings.database_url,
        "ITSM_BROKER_URL": settings.broker_url,
        "ITSM_VAR_DIR": str(settings.var_dir),
        "ITSM_JIRA__BASE_URL": settings.jira.base_url or "",
        "ITSM_JIRA__EMAIL": settings.jira.email or "",
        "ITSM_JIRA__ACCOUNT_ID": settings.jira.account_id or "",
        "ITSM_JIRA__API_TOKEN": settings.jira.api_token.get_secret_value() if settings.jira.api_token else "",
        "ITSM_LOG__LEVEL": "WARNING",
        "ITSM_WORKER__METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--queues", "deliver", "--concurrency", "1"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _sent(engine: Engine, delivery_id: int) -> bool:
    with Session(engine) as s:
        row = s.get(Delivery, delivery_id)
        return row is not None and row.status == "sent"


def test_a_viewer_sees_no_actions_and_a_forced_approve_is_403(page: Any, site: str, engine: Engine) -> None:
    sid = seed_suggestion(engine)
    log_in(page, site, "viewer")
    page.goto(f"{site}/review/suggestions/{sid}")
    assert page.locator("button#approve").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    resp = page.request.post(
        f"{site}/review/suggestions/{sid}/approve", form={"csrf_token": token, "version": "0", "reply": "sneaky"}
    )
    assert resp.status == 403
    assert deliveries(engine) == []
    assert [a.action for a in audit_rows(engine)] == ["login"]


def test_a_form_without_its_csrf_token_is_refused(page: Any, site: str, engine: Engine) -> None:
    sid = seed_suggestion(engine)
    log_in(page, site, "agent")
    page.goto(f"{site}/review/suggestions/{sid}")
    # Strip the hidden token from the real form (DevTools evaluation is not subject to the page's CSP).
    page.evaluate("document.querySelector('form.approve input[name=csrf_token]').remove()")
    page.click("button#approve")
    assert "csrf_failed" in page.content()
    assert deliveries(engine) == []
    with Session(engine) as s:
        row = s.get(Suggestion, sid)
        assert row is not None and row.status == "pending"


def test_a_script_in_the_subject_renders_as_text_and_never_runs(page: Any, site: str, engine: Engine) -> None:
    sid = seed_suggestion(engine, subject=XSS, body="<script>alert('body')</script>\n<b>bold?</b>")
    log_in(page, site, "agent")
    assert page.locator("img").count() == 0
    assert page.get_by_text(XSS).count() == 1  # shown literally in the queue
    response = page.goto(f"{site}/review/suggestions/{sid}")
    assert response is not None and "unsafe-inline" not in response.headers["content-security-policy"]
    assert page.inner_text("h1.subject") == XSS
    assert "<script>alert('body')</script>" in page.inner_text("pre.body")
    assert page.locator("img").count() == 0 and page.locator("pre.body b").count() == 0
    shot(page, "ticket-hostile")
    assert page.dialogs == []


def test_the_dashboard_draws_rates_and_precision_over_time(page: Any, site: str, engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from service.domain.tables import LabelCorrection

    now = datetime.now(UTC)
    plan = [(day, n, seed_suggestion(engine, subject=f"day {day} #{n}")) for day in range(14) for n in range(5)]
    with Session(engine) as s:  # two weeks of decisions: acceptance rises, edits fall
        for day, n, sid in plan:
            row = s.get(Suggestion, sid)
            assert row is not None
            sent = n < 2 + day // 4
            row.status = "delivered" if sent else "rejected"
            row.edit_distance = 12 if sent and n < 2 - day // 7 else 0
            row.decided_at = now - timedelta(days=13 - day)
            s.add(row)
            if n == day % 5:
                s.add(LabelCorrection(ticket_id=row.ticket_id, field="queue", new_value="Access", origin="review"))
        s.commit()
    log_in(page, site, "viewer")
    page.goto(f"{site}/review/dashboard?days=14")
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart polyline").count() == 4  # acceptance, edits; queue and priority precision
    assert page.inner_text("section.tiles").count("%") == 4
    shot(page, "dashboard")
