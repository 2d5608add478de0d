"""The `itsm-triage` commands of the HTTP side: serve's safety checks, db upgrade, replay against a live server."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from service.api.app import create_app
from service.cli import main
from service.settings import Settings
from tests.api.conftest import LiveServer, queued_tasks
from tests.conftest import JIRA_SECRET, SN_SECRET


def test_serve_refuses_to_start_without_webhook_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ITSM_JIRA__WEBHOOK_SECRET", "ITSM_SERVICENOW__WEBHOOK_SECRET", "ITSM_API__DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["serve", "--port", "8999"])
    assert result.exit_code == 2
    assert "ITSM_JIRA__WEBHOOK_SECRET" in result.output and "--dev" in result.output


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("ITSM_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"inbound_event", "ticket", "triage", "delivery", "suggestion", "audit_entry"} <= tables


def test_replay_posts_signed_samples_that_are_stored_and_queued(
    redis_broker: tuple[Settings, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, broker = redis_broker
    monkeypatch.setenv("ITSM_JIRA__WEBHOOK_SECRET", JIRA_SECRET)
    monkeypatch.setenv("ITSM_SERVICENOW__WEBHOOK_SECRET", SN_SECRET)
    with LiveServer(create_app(settings)) as server:
        result = CliRunner().invoke(main, ["replay", "--url", server.url, "--count", "2"])
        assert result.exit_code == 0, result.output
        assert result.output.count(" 202 ") == 4
        first = CliRunner().invoke(
            main, ["replay", "--url", server.url, "--keep-ids", "--sample", "jira_issue_created"]
        )
        again = CliRunner().invoke(
            main, ["replay", "--url", server.url, "--keep-ids", "--sample", "jira_issue_created"]
        )
    assert " 202 " in first.output and '"duplicate"' in again.output
    assert len(queued_tasks(broker)) == 5


def test_replay_rejects_a_broken_file_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_JIRA__WEBHOOK_SECRET", JIRA_SECRET)
    broken = tmp_path / "broken.json"
    broken.write_text('{"webhookEvent": "jira:issue_created", ')
    result = CliRunner().invoke(main, ["replay", "--file", str(broken)])
    assert result.exit_code == 2 and "neither JSON nor JSON lines" in result.output
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"hello": 1}')
    result = CliRunner().invoke(main, ["replay", "--file", str(unknown)])
    assert result.exit_code == 2 and "cannot tell the source" in result.output


def test_replay_says_when_the_service_is_not_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_JIRA__WEBHOOK_SECRET", JIRA_SECRET)
    result = CliRunner().invoke(main, ["replay", "--url", "http://127.0.0.1:1", "--sample", "jira_issue_created"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_status_counts_what_is_stored(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from fastapi.testclient import TestClient

    from tests.conftest import fixture_bytes, fixture_headers

    with TestClient(create_app(settings)) as client:
        client.post(
            "/webhooks/jira",
            content=fixture_bytes("jira_issue_created.json"),
            headers=fixture_headers("jira_issue_created.headers.json"),
        )
    monkeypatch.setenv("ITSM_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["tickets"] == 1 and sum(data["events"].values()) == 1


def test_status_explains_an_unmigrated_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSM_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1 and "db upgrade" in result.output


def test_replay_sends_a_recorded_fixture_byte_for_byte(redis_broker: tuple[Settings, redis.Redis]) -> None:
    from tests.conftest import FIXTURES

    settings, _broker = redis_broker
    with LiveServer(create_app(settings)) as server:
        args = [
            "replay",
            "--url",
            server.url,
            "--file",
            str(FIXTURES / "jira_issue_created.json"),
            "--headers",
            str(FIXTURES / "jira_issue_created.headers.json"),
        ]
        first = CliRunner().invoke(main, args)
        again = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and " 202 " in first.output
    assert again.exit_code == 0 and '"duplicate"' in again.output
