"""Logs are JSON lines with a request id, and never carry a ticket body or a secret."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.logging import configure_logging
from service.settings import Settings
from tests.conftest import JIRA_SECRET, fixture_bytes, fixture_headers


def test_webhook_logs_are_json_with_request_id_and_no_body_or_secret(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(settings)
    try:
        with TestClient(create_app(settings)) as client:
            response = client.post(
                "/webhooks/jira",
                content=fixture_bytes("jira_issue_created.json"),
                headers={**fixture_headers("jira_issue_created.headers.json"), "X-Request-ID": "req-123"},
            )
        assert response.headers["x-request-id"] == "req-123"
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        received = [line for line in lines if line.get("event") == "webhook_received"]
        assert received and received[0]["request_id"] == "req-123" and received[0]["source"] == "jira"
        everything = "\n".join(json.dumps(line) for line in lines)
        assert "GlobalProtect" not in everything and JIRA_SECRET not in everything
    finally:
        logging.getLogger().handlers.clear()


def test_sensitive_keys_are_redacted_even_when_passed_by_mistake(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    configure_logging(settings)
    try:
        structlog.get_logger("t").warning("oops", body="customer text", api_token="tok", ticket_id=7)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["body"] == "[redacted]" and line["api_token"] == "[redacted]" and line["ticket_id"] == 7
    finally:
        logging.getLogger().handlers.clear()
