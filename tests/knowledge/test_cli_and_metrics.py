"""`itsm-triage kb sync|status|search` against the fakes, the beat entry, and sync health in /metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine

from service.api.app import create_app
from service.cli import main
from service.knowledge.metrics import KnowledgeCollector
from service.knowledge.servicenow import ServiceNowKnowledge
from service.knowledge.sync import sync_source
from service.settings import Settings
from tests.fakes.fake_kb import FakeConfluence, FakeServiceNowKnowledge
from tests.knowledge.conftest import with_groups
from workers.app import make_worker_app
from workers.knowledge import KB_SYNC_TASK


def _env(settings: Settings, groups: dict[str, dict[str, object]]) -> dict[str, str]:
    """ITSM_* variables for the CLI (it builds its own Settings from the environment)."""
    env = {"ITSM_DATABASE_URL": settings.database_url, "ITSM_VAR_DIR": str(settings.var_dir)}
    for group, values in groups.items():
        for key, value in values.items():
            env[f"ITSM_{group.upper()}__{key.upper()}"] = json.dumps(value) if not isinstance(value, str) else value
    return env


def test_cli_syncs_both_sources_and_reports(
    settings: Settings, fake_sn_kb: FakeServiceNowKnowledge, fake_confluence: FakeConfluence
) -> None:
    fake_sn_kb.put("a1", number="KB001", title="Mailbox full", html="<p>Archive old mail in Outlook.</p>")
    fake_confluence.put("77", title="Printer offline", html="<p>Re-add the printer from print01.</p>")
    groups = fake_sn_kb.settings()
    groups["kb"].update(fake_confluence.settings()["kb"])
    runner = CliRunner()
    result = runner.invoke(main, ["kb", "sync", "--json"], env=_env(settings, groups))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith('{"added"')]  # not the log lines
    reports = {r["source"]: r for r in map(json.loads, lines)}
    assert reports["servicenow"]["added"] == 1 and reports["confluence"]["added"] == 1

    # Two articles are too few for BM25 idf to exceed the default floor: ask without one.
    found = runner.invoke(
        main, ["kb", "search", "outlook mailbox full", "--min-score", "0"], env=_env(settings, groups)
    )
    assert found.exit_code == 0 and "KB001" in found.output and "Mailbox full" in found.output
    status = runner.invoke(main, ["kb", "status", "--json"], env=_env(settings, groups))
    data = json.loads(next(line for line in status.output.splitlines() if line.startswith('{"passages"')))
    assert data["passages"] == 2 and {s["source"] for s in data["sources"]} == {"servicenow", "confluence"}

    fake_confluence.fail_next(401, path="/spaces$")  # a revoked token: reported, exit 1, nothing removed
    failed = runner.invoke(main, ["kb", "sync", "--source", "confluence"], env=_env(settings, groups))
    assert failed.exit_code == 1 and "401" in failed.output


def test_cli_explains_a_missing_configuration(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["kb", "sync"], env=_env(settings, {}))
    assert result.exit_code == 1 and "no knowledge base configured" in result.output
    half = CliRunner().invoke(main, ["kb", "sync"], env=_env(settings, {"kb": {"servicenow_enabled": True}}))
    assert half.exit_code == 1 and "ITSM_SERVICENOW__INSTANCE_URL" in half.output
    long = CliRunner().invoke(main, ["kb", "search", "x" * 20001], env=_env(settings, {}))
    assert long.exit_code == 2 and "20,000" in long.output


def test_beat_schedules_the_sync_only_when_a_source_is_configured(settings: Settings) -> None:
    assert "itsm-kb-sync" not in make_worker_app(settings).conf.beat_schedule
    configured = with_groups(settings, {"kb": {"servicenow_enabled": True, "sync_interval_s": 300}})
    app = make_worker_app(configured)
    entry = app.conf.beat_schedule["itsm-kb-sync"]
    assert entry["task"] == KB_SYNC_TASK and entry["schedule"] == 300.0 and KB_SYNC_TASK in app.tasks
    off = with_groups(settings, {"kb": {"servicenow_enabled": True, "sync_interval_s": 0}})
    assert "itsm-kb-sync" not in make_worker_app(off).conf.beat_schedule


def test_metrics_show_sync_lag_errors_and_articles(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake_sn_kb.put("a1", number="KB001", title="VPN", html="<p>Reconnect.</p>")
    cfg = with_groups(settings, fake_sn_kb.settings(max_retries=0))
    synced_at = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    sync_source(engine, cfg, ServiceNowKnowledge(cfg), clock=lambda: synced_at)
    fake_sn_kb.fail_next(503, path="kb_knowledge")
    sync_source(engine, cfg, ServiceNowKnowledge(cfg), clock=lambda: synced_at + timedelta(minutes=15))

    registry = CollectorRegistry()
    registry.register(KnowledgeCollector(engine, clock=lambda: synced_at + timedelta(minutes=20)))
    text = generate_latest(registry).decode()
    assert 'itsm_kb_sync_lag_seconds{source="servicenow"} 1200.0' in text
    assert 'itsm_kb_sync_errors_total{source="servicenow"} 1.0' in text
    assert 'itsm_kb_sync_failing{source="servicenow"} 1.0' in text
    assert 'itsm_kb_articles{source="servicenow"} 1.0' in text
    assert 'itsm_kb_article_changes_total{change="added",source="servicenow"} 1.0' in text

    # The API's /metrics carries them too.
    with TestClient(create_app(cfg, engine=engine)) as client:
        body = client.get("/metrics").text
    assert 'itsm_kb_sync_errors_total{source="servicenow"} 1.0' in body and "itsm_kb_sync_lag_seconds" in body
