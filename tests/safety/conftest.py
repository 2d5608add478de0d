"""Fixtures for the safety tests: the API app with payload keys, signed deliveries, the fake pipeline."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel
from sqlmodel import select as sm_select

from service.api.app import create_app
from service.crypto import new_key
from service.domain.tables import Triage
from service.logging import configure_logging
from service.samples import as_new_ticket, load_sample, make_delivery
from service.settings import PrivacySettings, Settings
from tests.conftest import JIRA_SECRET, SN_SECRET
from tests.workers.conftest import fake_llm, pipeline_ctx, recorder  # noqa: F401  (fixtures for this directory)
from workers.pipeline import PipelineContext, triage_event


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """The test settings with a payload key: raw payloads are kept, redacted and encrypted."""
    return settings.model_copy(update={"privacy": PrivacySettings(payload_keys=SecretStr(new_key()))})


@pytest.fixture
def client(keyed: Settings) -> Iterator[TestClient]:
    """API + review app over the test database (call `json_logs` in the test body to read its logs)."""
    try:
        with TestClient(create_app(keyed), base_url="https://testserver") as c:
            yield c
    finally:
        logging.getLogger().handlers.clear()


def json_logs(settings: Settings) -> None:
    """Production logging (JSON lines to stderr) bound to the stderr capsys captures during the test body."""
    configure_logging(settings)


def jira_payload(n: int, *, subject: str, body: str, email: str | None = None, **fields: Any) -> dict[str, Any]:
    """A new Jira issue (key ITSD-<100000+n>) with this text, extra fields and optionally another reporter."""
    payload = as_new_ticket(load_sample("jira_issue_created"), n, subject=subject, body=body)
    issue_fields = payload["issue"]["fields"]
    issue_fields.update(copy.deepcopy(fields))
    if email is not None:
        reporter = issue_fields["reporter"]
        reporter["emailAddress"] = email
        reporter["accountId"] = f"acct-{email}"
    return payload


def sn_payload(n: int, *, subject: str, body: str) -> dict[str, Any]:
    """A new ServiceNow incident with this text."""
    return as_new_ticket(load_sample("servicenow_incident_webhook"), n, subject=subject, body=body)


def post(client: TestClient, payload: dict[str, Any], *, delivery_id: str | None = None) -> dict[str, Any]:
    """Sign and post one delivery; returns the JSON answer (asserts it was accepted)."""
    secret = JIRA_SECRET if "webhookEvent" in payload else SN_SECRET
    d = make_delivery(payload, secret=secret, delivery_id=delivery_id)
    response = client.post(d.path, content=d.body, headers=d.headers)
    assert response.status_code in (200, 202), response.text
    answer: dict[str, Any] = response.json()
    return answer


def dump_tables(engine: Engine) -> str:
    """Every row of every table, as text: what a database dump (or a backup) would hold."""
    parts: list[str] = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(select(table)).all():
                parts.append(json.dumps([str(v) for v in row], ensure_ascii=False))
        if engine.dialect.name == "sqlite":  # anything else that lives in the file (FTS shadow tables, ...)
            names = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))]
            known = {t.name for t in SQLModel.metadata.sorted_tables}
            for name in names:
                if name not in known and not name.startswith("sqlite_"):
                    parts += [str(tuple(r)) for r in conn.execute(text(f'SELECT * FROM "{name}"')).all()]
    return "\n".join(parts)


def triage_and_draft(ctx: PipelineContext, event_id: int) -> None:
    """Both stages for one event: the labels (triage_event), then the reply draft where the worker has a second
    stage (workers/drafts.py); drafts are what the review API shows and agents approve."""
    triage_event(ctx, event_id)
    try:
        from workers.drafts import DraftContext, draft_triage
    except ImportError:  # one-stage pipeline: the draft was stored with the labels
        return
    with Session(ctx.engine) as s:
        pending = [t.id for t in s.exec(sm_select(Triage).where(Triage.event_id == event_id)) if t.id is not None]
    draft_ctx = DraftContext(ctx.engine, ctx.settings, ctx.triager, ctx.enqueue)
    for triage_id in pending:
        draft_triage(draft_ctx, triage_id)
