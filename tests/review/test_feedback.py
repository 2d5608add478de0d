"""Queue filters and paging, feedback export in the training format, dashboard figures, the users CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.cli import main
from service.domain.tables import AuditEntry, LabelCorrection, Suggestion, SuggestionStatus, Triage, User
from service.review import feedback
from service.review.dashboard import compute
from service.review.security import verify_password
from service.settings import Settings
from tests.review.conftest import Accounts, seed_suggestion


def preds(queue: str, conf: float) -> dict[str, dict[str, object]]:
    """Predictions with one queue label at `conf` and a fixed priority."""
    others = {q: (1 - conf) / 2 for q in ("Network", "Access", "Hardware") if q != queue}
    return {
        "queue": {"label": queue, "confidence": conf, "probabilities": {queue: conf, **others}},
        "priority": {"label": "P3", "confidence": 0.6, "probabilities": {"P3": 0.6, "P4": 0.4}},
    }


def test_queue_filters_pages_and_counts(client: TestClient, engine: Engine, accounts: Accounts) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(30):
        seed_suggestion(
            engine,
            source="jira" if i % 3 else "servicenow",
            subject=f"ticket {i}",
            predictions=preds("Network" if i % 2 else "Access", 0.5 + i / 100),
            created_at=base + timedelta(minutes=i),
        )
    h = accounts.headers("viewer")
    client.post("/api/v1/suggestions/30/reject", json={"reason": "no"}, headers=accounts.headers("agent"))

    page1 = client.get("/api/v1/suggestions", params={"per_page": 25}, headers=h).json()
    assert page1["total"] == 30 and len(page1["items"]) == 25
    assert [i["subject"] for i in page1["items"][:2]] == ["ticket 29", "ticket 28"]  # newest first
    assert page1["counts"]["pending"] == 29 and page1["counts"]["rejected"] == 1
    page2 = client.get("/api/v1/suggestions", params={"per_page": 25, "page": 2}, headers=h).json()
    assert [i["subject"] for i in page2["items"]] == [f"ticket {i}" for i in range(4, -1, -1)]

    def subjects(**params: object) -> set[str]:
        out = client.get("/api/v1/suggestions", params={"per_page": 200, **params}, headers=h).json()
        return {i["subject"] for i in out["items"]}

    assert subjects(source="servicenow") == {f"ticket {i}" for i in range(0, 30, 3)}
    assert subjects(status="rejected") == {"ticket 29"}
    assert subjects(field="queue", value="Access") == {f"ticket {i}" for i in range(0, 30, 2)}
    assert subjects(field="queue", min_conf=0.75) == {f"ticket {i}" for i in range(25, 30)}
    assert subjects(field="queue", value="Network", max_conf=0.55) == {"ticket 1", "ticket 3", "ticket 5"}
    assert client.get("/api/v1/suggestions", params={"status": "bogus"}, headers=h).status_code == 422


def test_export_training_writes_reviewed_tickets_with_corrected_labels(
    client: TestClient, engine: Engine, accounts: Accounts, settings: Settings, tmp_path: Path
) -> None:
    h = accounts.headers("agent")
    edited = seed_suggestion(engine, subject="VPN", body="drops", draft="Draft A")
    rejected = seed_suggestion(engine, subject="Mail", body="full", draft="Draft B")
    seed_suggestion(engine, subject="Untouched", body="never reviewed")
    corrected_only = seed_suggestion(engine, subject="Badge", body="lost")
    client.post(f"/api/v1/suggestions/{edited}/approve", json={"reply": "Final A"}, headers=h)
    client.post("/api/v1/tickets/1/corrections", json={"fields": {"queue": "Access"}}, headers=h)
    client.post(f"/api/v1/suggestions/{rejected}/reject", json={"reason": "wrong"}, headers=h)
    with Session(engine) as s:  # a later correction from the ITSM tool (webhook) wins over the one from review
        s.add(LabelCorrection(ticket_id=1, field="queue", old_value="Access", new_value="Hardware", origin="itsm"))
        s.add(
            LabelCorrection(ticket_id=corrected_only, field="priority", old_value="P3", new_value="P2", origin="itsm")
        )
        s.commit()

    out = tmp_path / "feedback.jsonl"
    result = CliRunner().invoke(
        main, ["export-training", "--since", "2000-01-01", "--out", str(out)], obj=settings, env=_env(settings)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {
            "id": "jira:SUP-1",
            "subject": "VPN",
            "body": "drops",
            "priority": "P3",
            "queue": "Hardware",
            "reply": "Final A",
        },
        {"id": "jira:SUP-2", "subject": "Mail", "body": "full", "priority": "P3", "queue": "Network", "reply": None},
        {"id": "jira:SUP-4", "subject": "Badge", "body": "lost", "priority": "P2", "queue": "Network", "reply": None},
    ]
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    CliRunner().invoke(main, ["export-training", "--since", later, "--out", str(out)], env=_env(settings))
    assert out.read_text() == ""


def test_training_rows_reads_many_tickets_in_a_fixed_number_of_queries_per_chunk(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's first memory poll can span tens of thousands of reviews: no queries per ticket."""
    now = datetime.now(UTC)
    for i in range(23):
        sug_id = seed_suggestion(engine, subject=f"ticket {i}", body=f"body {i}", draft=f"draft {i}")
        with Session(engine) as s:
            sug = s.get(Suggestion, sug_id)
            assert sug is not None
            if i % 5 == 4:  # never reviewed: not exported
                continue
            sug.status = SuggestionStatus.approved
            sug.final_reply = f"sent {i}"
            sug.decided_at = now - timedelta(minutes=10)
            s.add(sug)
            if i % 3 == 0:  # re-triaged and re-approved later: the newest triage and reply win
                again = Triage(ticket_id=sug.ticket_id, source_version=2, predictions=preds("Hardware", 0.9))
                s.add(again)
                s.flush()
                assert again.id is not None
                s.add(
                    Suggestion(
                        triage_id=again.id,
                        ticket_id=sug.ticket_id,
                        draft="again",
                        status=SuggestionStatus.delivered,
                        final_reply=f"sent again {i}",
                        decided_at=now,
                    )
                )
            if i == 7:
                s.add(LabelCorrection(ticket_id=sug.ticket_id, field="priority", old_value="P3", new_value="P2"))
            s.commit()

    statements: list[str] = []

    def count(*args: object) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):  # not SQLite's BEGIN IMMEDIATE
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        monkeypatch.setattr(feedback, "_CHUNK", 7)
        with Session(engine) as s:
            rows = list(feedback.training_rows(s, since=now - timedelta(hours=1)))
    finally:
        event.remove(engine, "before_cursor_execute", count)

    expected = [i for i in range(23) if i % 5 != 4]
    assert [r["subject"] for r in rows] == [f"ticket {i}" for i in expected]
    by_subject = {r["subject"]: r for r in rows}
    assert by_subject["ticket 3"]["reply"] == "sent again 3" and by_subject["ticket 3"]["queue"] == "Hardware"
    assert by_subject["ticket 1"]["reply"] == "sent 1" and by_subject["ticket 1"]["queue"] == "Network"
    assert by_subject["ticket 7"]["priority"] == "P2" and by_subject["ticket 8"]["priority"] == "P3"
    # One query for the ids, then four per chunk of 7 (tickets, triages, replies, corrections): 1 + 3 x 4.
    assert len(statements) == 1 + 4 * 3, statements


def test_dashboard_measures_acceptance_edits_and_precision(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    h = accounts.headers("agent")
    ids = [seed_suggestion(engine, draft="Same draft") for _ in range(4)]
    client.post(f"/api/v1/suggestions/{ids[0]}/approve", json={}, headers=h)  # sent unedited
    client.post(f"/api/v1/suggestions/{ids[1]}/approve", json={"reply": "Changed"}, headers=h)  # edited
    client.post(f"/api/v1/suggestions/{ids[2]}/reject", json={"reason": "bad"}, headers=h)
    client.post("/api/v1/tickets/1/corrections", json={"fields": {"queue": "Access"}}, headers=h)
    with Session(engine) as s:
        total = compute(s, days=7).total
    assert (total.decided, total.sent, total.edited) == (3, 2, 1)
    assert total.acceptance_rate == 2 / 3 and total.edit_rate == 0.5
    assert total.precision("queue") == 2 / 3 and total.precision("priority") == 1.0
    api = client.get("/api/v1/stats", params={"days": 7}, headers=accounts.headers("viewer")).json()
    assert len(api["days"]) == 7 and api["total"]["acceptance_rate"] == 2 / 3
    assert api["days"][-1]["precision"]["queue"] == 2 / 3


def test_users_cli_creates_accounts_that_can_log_in_and_tokens_that_work(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    runner = CliRunner()
    env = _env(settings)
    created = runner.invoke(
        main,
        ["users", "create", "--username", "root", "--role", "admin", "--password-stdin"],
        input="s3cret-passw0rd\n",
        env=env,
    )
    assert created.exit_code == 0, created.output
    assert (
        runner.invoke(main, ["users", "create", "--username", "root", "--password", "another-one"], env=env).exit_code
        != 0
    )
    assert runner.invoke(main, ["users", "create", "--username", "x", "--password", "short"], env=env).exit_code != 0
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == "root")).one()
        assert user.role == "admin" and user.password_hash and "s3cret" not in user.password_hash
        assert verify_password("s3cret-passw0rd", user.password_hash)
    token = runner.invoke(main, ["users", "token", "create", "--username", "root", "--name", "panel"], env=env)
    assert token.exit_code == 0, token.output
    value = token.output.strip()
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {value}"}).json() == {
        "username": "root",
        "role": "admin",
    }
    with Session(engine) as s:
        assert value not in json.dumps([a.model_dump(mode="json") for a in s.exec(select(AuditEntry)).all()])
    assert runner.invoke(main, ["users", "disable", "--username", "root"], env=env).exit_code == 0
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    with Session(engine) as s:
        actions = [a.action for a in s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()]  # type: ignore[arg-type]
    assert actions == ["user_created", "token_created", "user_disabled"]


def _env(settings: Settings) -> dict[str, str]:
    """Environment that makes the CLI's own Settings() point at the test database."""
    return {
        "ITSM_DATABASE_URL": settings.database_url,
        "ITSM_VAR_DIR": str(settings.var_dir),
        "ITSM_BROKER_URL": settings.broker_url,
    }


def test_a_suggestion_shows_probabilities_policy_decisions_and_final_values(
    client: TestClient, engine: Engine, accounts: Accounts
) -> None:
    sid = seed_suggestion(engine)
    client.post("/api/v1/tickets/1/corrections", json={"fields": {"priority": "P2"}}, headers=accounts.headers("agent"))
    out = client.get(f"/api/v1/suggestions/{sid}", headers=accounts.headers("viewer")).json()
    queue, priority = out["predictions"]["queue"], out["predictions"]["priority"]
    assert (queue["label"], queue["decision"], queue["final"]) == ("Network", "auto", "Network")
    assert queue["decision_reason"].startswith("confidence 0.82") and queue["probabilities"]["Access"] == 0.1
    assert (priority["label"], priority["decision"], priority["final"]) == ("P3", "suggest", "P2")
    assert [(c["field"], c["new_value"]) for c in out["corrections"]] == [("priority", "P2")]
    assert [(d["kind"], d["status"]) for d in out["deliveries"]] == [("correction", "pending")]
    assert out["ticket"]["subject"] == "VPN drops every 10 minutes"


def test_decisions_stored_as_bare_strings_are_still_understood() -> None:
    from service.domain.tables import Triage
    from service.review.queries import decision_of

    triage = Triage(ticket_id=1, decisions={"queue": "auto", "priority": {"decision": "shadow", "reason": "r"}})
    assert decision_of(triage, "queue") == ("auto", None)
    assert decision_of(triage, "priority") == ("shadow", "r")
    assert decision_of(triage, "missing") == (None, None)
