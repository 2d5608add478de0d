"""Issue 16 item 1: `itsm-triage purge` erases one person's or one ticket's data everywhere, audit-logged, and
the retention purge clears raw payloads and closed tickets' text; running workers forget the tickets."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from service.cli import main
from service.domain.privacy import Erasure
from service.domain.tables import AuditEntry, InboundEvent, LabelCorrection, Suggestion, Ticket, utcnow
from service.retention import erase, purge_expired
from service.review.feedback import training_rows
from service.settings import Settings
from tests.review.conftest import add_user
from tests.safety.conftest import dump_tables, jira_payload, post, triage_and_draft
from workers.fake_triager import FakeTriager
from workers.memory_sync import MemorySync
from workers.pipeline import PipelineContext

DANA = "dana@example.com"
EPOCH = utcnow() - timedelta(days=3650)


def _seed(client: TestClient, engine: Engine, ctx: PipelineContext) -> dict[str, int]:
    """Two tickets of Dana, one of Erik; triaged, one draft approved, one label corrected (all reviewed)."""
    posted = {
        "dana-1": post(client, jira_payload(1, subject="VPN broken", body="Dana's VPN canary-dana-1", email=DANA)),
        "dana-2": post(client, jira_payload(2, subject="Printer", body="Dana's printer canary-dana-2", email=DANA)),
        "erik": post(client, jira_payload(3, subject="Mouse", body="Erik's mouse canary-erik", email="erik@x.org")),
    }
    for answer in posted.values():
        triage_and_draft(ctx, answer["event_id"])
    token = add_user(engine, "admin", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    with Session(engine) as s:
        sugs = {x.ticket_id: x.id for x in s.exec(select(Suggestion)).all()}
    for name in ("dana-1", "erik"):
        r = client.post(f"/api/v1/suggestions/{sugs[posted[name]['ticket_id']]}/approve", json={}, headers=auth)
        assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/tickets/{posted['dana-2']['ticket_id']}/corrections", json={"fields": {"priority": "P4"}},
                    headers=auth)  # fmt: skip
    assert r.status_code == 200, r.text
    return {name: a["ticket_id"] for name, a in posted.items()}


def test_purge_reporter_erases_every_row_of_their_tickets_and_the_workers_forget_them(
    client: TestClient, engine: Engine, keyed: Settings, pipeline_ctx: PipelineContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    tickets = _seed(client, engine, pipeline_ctx)
    sync, model = MemorySync(engine, 60.0), FakeTriager()
    sync(model)  # a running worker: it has replayed the (empty) erasure log already
    with Session(engine) as s:
        exported_before = {r["id"] for r in training_rows(s, since=EPOCH)}
    assert {"jira:ITSD-100001", "jira:ITSD-100002", "jira:ITSD-100003"} <= exported_before

    monkeypatch.setenv("ITSM_DATABASE_URL", keyed.database_url)
    result = CliRunner().invoke(main, ["purge", "--reporter", "Dana@Example.com", "--actor", "dpo", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])  # after any log lines
    assert report["tickets"] == 2
    assert report["rows"]["ticket"] == 2 and report["rows"]["inbound_event"] == 2 and report["rows"]["triage"] == 2
    assert report["rows"]["suggestion"] == 2 and report["rows"]["label_correction"] == 1

    dump = dump_tables(engine)
    assert "canary-dana" not in dump and "canary-erik" in dump
    assert DANA not in dump.lower()  # not in the audit row either: it names the reporter by digest only
    with Session(engine) as s:
        remaining = set(s.exec(select(Ticket.id)).all())  # type: ignore[call-overload]
        assert remaining == {tickets["erik"]}
        for table in SQLModel.metadata.sorted_tables:
            if "ticket_id" in table.c:
                left = s.execute(
                    select(table.c.ticket_id).where(table.c.ticket_id.in_([tickets["dana-1"], tickets["dana-2"]]))
                )
                assert left.all() == [], table.name
        [audit] = s.exec(select(AuditEntry).where(AuditEntry.action == "erased")).all()
        assert audit.actor == "dpo" and audit.target_type == "reporter" and audit.target_id.startswith("sha256:")
        [erasure] = s.exec(select(Erasure)).all()
        exported_after = {r["id"] for r in training_rows(s, since=EPOCH)}
    assert erasure.memory_ids == ["jira:ITSD-100001", "jira:ITSD-100002"]
    assert exported_after == exported_before - {"jira:ITSD-100001", "jira:ITSD-100002"}

    sync._forget_due = 0.0  # the next poll is due (it would be within a minute)
    sync(model)
    assert model.forgotten == {"jira:ITSD-100001", "jira:ITSD-100002"}
    fresh = FakeTriager()
    MemorySync(engine, 0.0)(fresh)  # a worker started later (even with review learning off) replays the log
    assert fresh.forgotten == model.forgotten


def test_purge_ticket_erases_one_ticket_and_logs_an_empty_request_too(
    client: TestClient, engine: Engine, keyed: Settings, pipeline_ctx: PipelineContext
) -> None:
    tickets = _seed(client, engine, pipeline_ctx)
    report = erase(engine, actor="cli:test", ticket="jira:ITSD-100003")
    assert report.tickets == 1 and report.memory_ids == ["jira:ITSD-100003"]
    nothing = erase(engine, actor="cli:test", ticket="NOPE-1")
    assert nothing.tickets == 0 and nothing.counts == {}
    with Session(engine) as s:
        assert s.get(Ticket, tickets["erik"]) is None and s.get(Ticket, tickets["dana-1"]) is not None
        actions = [a.target_id for a in s.exec(select(AuditEntry).where(AuditEntry.action == "erased"))]
    assert actions == ["jira:ITSD-100003", "NOPE-1"]


def test_retention_clears_old_payloads_and_closed_tickets_text_only(
    client: TestClient, engine: Engine, keyed: Settings, pipeline_ctx: PipelineContext
) -> None:
    tickets = _seed(client, engine, pipeline_ctx)
    with Session(engine) as s:
        s.execute(update(Ticket).where(Ticket.id == tickets["dana-1"]).values(status="Done"))  # type: ignore[arg-type]
        s.commit()
    soon = purge_expired(engine, keyed, now=utcnow() + timedelta(days=29))
    assert (soon.payloads, soon.tickets) == (0, 0)
    later = purge_expired(engine, keyed, now=utcnow() + timedelta(days=400))
    assert later.payloads == 3 and later.tickets == 1
    with Session(engine) as s:
        assert all(e.payload == "" for e in s.exec(select(InboundEvent)))
        done = s.get(Ticket, tickets["dana-1"])
        still = s.get(Ticket, tickets["dana-2"])
        assert done is not None and still is not None
        assert (done.subject, done.body, done.reporter) == ("", "", None) and "text_purged" in done.flags
        assert "canary-dana-2" in still.body
        sug = s.exec(select(Suggestion).where(Suggestion.ticket_id == done.id)).one()
        assert sug.draft == "" and sug.final_reply is None
        [erasure] = s.exec(select(Erasure)).all()
        exported = {r["id"] for r in training_rows(s, since=EPOCH)}
        labels = s.exec(select(LabelCorrection)).all()
    assert erasure.reason == "retention" and erasure.memory_ids == ["jira:ITSD-100001"]
    assert "jira:ITSD-100001" not in exported and "jira:ITSD-100002" in exported and labels
    assert "canary-dana-1" not in dump_tables(engine)
    again = purge_expired(engine, keyed, now=utcnow() + timedelta(days=400))
    assert (again.payloads, again.tickets) == (0, 0)  # idempotent


def test_payload_keys_rotate_with_rekey(client: TestClient, engine: Engine, keyed: Settings,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from service.crypto import PayloadCipher, new_key

    post(client, jira_payload(5, subject="VPN", body="token ghp_" + "Zx9" * 12))
    old = keyed.privacy.payload_keys
    assert old is not None
    fresh = new_key()
    monkeypatch.setenv("ITSM_DATABASE_URL", keyed.database_url)
    monkeypatch.setenv("ITSM_PRIVACY__PAYLOAD_KEYS", f"{fresh},{old.get_secret_value()}")
    result = CliRunner().invoke(main, ["payloads", "rekey"])
    assert result.exit_code == 0 and "re-encrypted 1 payload" in result.output, result.output
    monkeypatch.setenv("ITSM_PRIVACY__PAYLOAD_KEYS", fresh)  # the old key is gone now
    shown = CliRunner().invoke(main, ["payloads", "show", "1"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["issue"]["fields"]["description"] == "token [REDACTED:token]"
    with pytest.raises(ValueError, match="Fernet keys"):
        PayloadCipher(["not-a-key"])
