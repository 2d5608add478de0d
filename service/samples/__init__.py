"""Bundled sample webhooks (from the contract fixtures) and signing, for `replay`, benchmarks and tests."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from service.webhooks.servicenow import sign as sign_servicenow

SAMPLES = {
    "jira_issue_created": "jira",
    "jira_issue_updated_by_agent": "jira",
    "jira_comment_created": "jira",
    "servicenow_incident_webhook": "servicenow",
}


@dataclass(frozen=True)
class Delivery:
    """One ready-to-send webhook: where, what bytes, which headers."""

    source: str
    body: bytes
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """The receiver's URL path."""
        return f"/webhooks/{self.source}"


def load_sample(name: str) -> dict[str, Any]:
    """A bundled sample payload by name (see SAMPLES)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; choose from {sorted(SAMPLES)}")
    return json.loads(resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8"))


def detect_source(payload: dict[str, Any]) -> str:
    """jira or servicenow, from the payload's shape."""
    if payload.get("schema") == "itsm-webhook/v1":
        return "servicenow"
    if "webhookEvent" in payload:
        return "jira"
    raise ValueError("cannot tell the source: expected a Jira webhook (webhookEvent) or itsm-webhook/v1 (schema)")


def sign_jira(secret: str, body: bytes) -> str:
    """X-Hub-Signature value for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def make_delivery(
    payload: dict[str, Any], *, secret: str, delivery_id: str | None = None, now: float | None = None
) -> Delivery:
    """Serialise and sign a payload as its source would (ServiceNow: timestamped with `now`)."""
    source = detect_source(payload)
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    if source == "jira":
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "User-Agent": "itsm-triage replay",
            "X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4().int)[:17],
            "X-Hub-Signature": sign_jira(secret, body),
        }
    else:
        stamp = str(int(now if now is not None else time.time()))
        event_id = delivery_id or f"incident:{payload.get('sys_id')}:{payload.get('sys_mod_count', '0')}"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "itsm-triage replay",
            "X-SN-Event-Id": event_id,
            "X-SN-Timestamp": stamp,
            "X-SN-Signature": sign_servicenow(secret, stamp, body),
        }
    return Delivery(source, body, headers)


def as_new_ticket(
    payload: dict[str, Any], n: int, *, subject: str | None = None, body: str | None = None
) -> dict[str, Any]:
    """A copy of a sample that describes a different ticket (new ids), optionally with other text."""
    data = copy.deepcopy(payload)
    now_ms = int(time.time() * 1000)
    if detect_source(data) == "jira":
        issue = data["issue"]
        issue["id"] = str(900000 + n)
        issue["key"] = f"{issue['key'].split('-')[0]}-{100000 + n}"
        data["timestamp"] = now_ms
        fields = issue.setdefault("fields", {})
        fields.pop("updated", None)
        if subject is not None:
            fields["summary"] = subject
        if body is not None:
            fields["description"] = body
    else:
        data["sys_id"] = uuid.uuid5(uuid.NAMESPACE_URL, f"itsm-sample-{n}").hex
        data["number"] = f"INC{9000000 + n}"
        if subject is not None:
            data["record"]["short_description"] = subject
        if body is not None:
            data["record"]["description"] = body
    return data
