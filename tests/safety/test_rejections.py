"""Issue 16 item 4: every rejected webhook is logged at warning level (source, reason, delivery id, remote
address; never the body or a secret), rate-limited so a flood cannot fill the disk."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.api.rejections import PER_KEY_PER_MINUTE, TOTAL_PER_MINUTE, RejectionLog
from service.samples import make_delivery, sign_jira
from service.settings import Settings
from tests.conftest import JIRA_SECRET
from tests.safety.conftest import jira_payload, json_logs

CANARY = "body-canary-7f3a"


def _rejections(err: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event") == "webhook_rejected"]


def test_each_kind_of_rejection_is_logged_without_body_or_secret(
    client: TestClient, keyed: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    json_logs(keyed)
    d = make_delivery(jira_payload(1, subject="x", body=CANARY), secret="wrong-secret", delivery_id="deliv-401")
    assert client.post(d.path, content=d.body, headers=d.headers).status_code == 401
    unsigned = {k: v for k, v in d.headers.items() if k != "X-Hub-Signature"}
    assert client.post(d.path, content=d.body, headers=unsigned).status_code == 401
    good = make_delivery(jira_payload(2, subject="x", body=CANARY), secret=JIRA_SECRET, delivery_id="deliv-400")
    broken = good.body[:-5]  # signed correctly, but not JSON
    headers = {**good.headers, "X-Hub-Signature": sign_jira(JIRA_SECRET, broken)}
    assert client.post(good.path, content=broken, headers=headers).status_code == 400
    assert client.post("/webhooks/gitlab", content=b"{}").status_code == 404
    lines = _rejections(capsys.readouterr().err)
    got = {(x["reason"], x["status"], x["delivery_id"]) for x in lines}
    assert ("invalid_signature", 401, "deliv-401") in got
    assert ("malformed_json", 400, "deliv-400") in got
    assert ("unknown_source", 404, None) in got
    assert all(x["level"] == "warning" and x["remote_addr"] for x in lines)
    everything = json.dumps(lines)
    assert CANARY not in everything and JIRA_SECRET not in everything and "sha256=" not in everything


def test_a_flood_is_logged_within_the_limit_and_counted() -> None:
    rl = RejectionLog()
    written = [
        rl.rejected(source="jira", reason="invalid_signature", status=401, delivery_id=str(i), remote_addr="10.0.0.9")
        for i in range(500)
    ]
    assert sum(written) == PER_KEY_PER_MINUTE
    others = [
        rl.rejected(source=f"probe{i}", reason=f"r{i % 30}", status=404, delivery_id=None, remote_addr="10.0.0.9")
        for i in range(500)
    ]
    assert sum(written) + sum(others) <= TOTAL_PER_MINUTE
    assert rl._suppressed[("jira", "invalid_signature")] == 500 - PER_KEY_PER_MINUTE
    assert set(k[0] for k in rl._suppressed) == {"jira", "unknown"}  # the path segment cannot grow the key space
