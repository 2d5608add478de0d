"""Webhook parsers: the contract's signature vectors, normalisation, and plain-text conversion of markup."""

from __future__ import annotations

import json

import pytest

from service.domain.errors import InvalidPayload, InvalidSignature
from service.settings import Settings
from service.webhooks.jira import JiraWebhookParser
from service.webhooks.markup import adf_to_text, wiki_to_text
from service.webhooks.servicenow import ServiceNowWebhookParser
from tests.conftest import FIXTURES, JIRA_SECRET, SN_SECRET, fixture_bytes

VECTORS = json.loads((FIXTURES / "signature_test_vectors.json").read_text())
SETTINGS = Settings(
    jira={"webhook_secret": JIRA_SECRET, "account_id": "62f0a1b2c3d4e5f607182930"},
    servicenow={"webhook_secret": SN_SECRET},
)


@pytest.mark.parametrize("case", VECTORS["jira"]["cases"], ids=lambda c: c["body_file"])
def test_jira_signature_vectors_verify(case: dict[str, str]) -> None:
    JiraWebhookParser(SETTINGS).verify(fixture_bytes(case["body_file"]), {"x-hub-signature": case["expected"]})


def test_jira_negative_vector_and_rotation() -> None:
    negative = VECTORS["jira"]["negative"]
    body = fixture_bytes(negative["body_file"])
    with pytest.raises(InvalidSignature):
        JiraWebhookParser(SETTINGS).verify(body, {"x-hub-signature": negative["header"]})
    rotated = Settings(jira={"webhook_secret": "new-secret", "webhook_secret_next": JIRA_SECRET})
    good = VECTORS["jira"]["cases"][0]
    JiraWebhookParser(rotated).verify(fixture_bytes(good["body_file"]), {"x-hub-signature": good["expected"]})


@pytest.mark.parametrize("case", VECTORS["servicenow"]["cases"], ids=lambda c: c["body_file"])
def test_servicenow_signature_vectors_verify_inside_the_window(case: dict[str, str]) -> None:
    stamp = int(case["timestamp"])
    parser = ServiceNowWebhookParser(SETTINGS, clock=lambda: stamp + 299)
    headers = {"x-sn-timestamp": case["timestamp"], "x-sn-signature": case["expected"]}
    parser.verify(fixture_bytes(case["body_file"]), headers)
    late = ServiceNowWebhookParser(SETTINGS, clock=lambda: stamp + 301)
    with pytest.raises(InvalidSignature, match="replay"):
        late.verify(fixture_bytes(case["body_file"]), headers)


def test_servicenow_raw_secret_is_used_not_its_base64_form() -> None:
    case = VECTORS["servicenow"]["cases"][0]
    b64 = Settings(servicenow={"webhook_secret": VECTORS["servicenow"]["secret_base64"]})
    parser = ServiceNowWebhookParser(b64, clock=lambda: int(case["timestamp"]))
    with pytest.raises(InvalidSignature):
        parser.verify(
            fixture_bytes(case["body_file"]), {"x-sn-timestamp": case["timestamp"], "x-sn-signature": case["expected"]}
        )


def test_jira_issue_created_normalises_to_a_canonical_ticket() -> None:
    event = JiraWebhookParser(SETTINGS).parse(json.loads(fixture_bytes("jira_issue_created.json")), delivery_id="d1")
    assert event.action == "triage" and event.ticket is not None
    ticket = event.ticket
    assert (ticket.source, ticket.external_id, ticket.external_key) == ("jira", "10231", "ITSD-42")
    assert ticket.extra["project"] == "ITSD" and ticket.extra["request_type"] == "Report a system problem"
    assert ticket.reporter == "712020:5f3c2a1e-9b7d-4c1a-8e2f-0a1b2c3d4e5f"
    assert ticket.source_version > 0 and ticket.created_at is not None
    assert event.business_key == f"jira:10231:{ticket.source_version}:jira:issue_created"


def test_servicenow_update_of_impact_is_a_priority_correction() -> None:
    payload = json.loads(fixture_bytes("servicenow_incident_webhook_updated.json"))
    payload["changed_fields"] = ["impact", "category"]
    payload["record"].update({"impact": "1", "urgency": "2", "category": "network"})
    event = ServiceNowWebhookParser(SETTINGS).parse(payload, delivery_id="d")
    assert event.action == "update"
    assert {(c.field, c.new) for c in event.changes} == {("priority", "P2"), ("queue", "network")}


def test_servicenow_echo_of_the_integration_user_is_ignored() -> None:
    payload = json.loads(fixture_bytes("servicenow_incident_webhook.json"))
    payload["sys_updated_by"] = "itsm.triage.bot"
    assert ServiceNowWebhookParser(SETTINGS).parse(payload, delivery_id="d").ignore_reason == "own_echo"


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"schema": "other"}, "schema"),
        ({"schema": "itsm-webhook/v1", "event_type": "incident.created", "sys_id": "x", "record": "no"}, "record"),
        ({"schema": "itsm-webhook/v1", "event_type": "incident.created", "record": {}}, "sys_id"),
        (
            {
                "schema": "itsm-webhook/v1",
                "event_type": "incident.created",
                "sys_id": "x",
                "sys_mod_count": "-1",
                "record": {},
            },
            "sys_mod_count",
        ),
    ],
)
def test_servicenow_payload_errors_name_the_field(payload: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        ServiceNowWebhookParser(SETTINGS).parse(payload, delivery_id="d")


def test_unhandled_jira_events_are_ignored_not_rejected() -> None:
    event = JiraWebhookParser(SETTINGS).parse({"webhookEvent": "worklog_created"}, delivery_id="d")
    assert event.action == "ignore" and "worklog_created" in (event.ignore_reason or "")


def test_wiki_markup_becomes_inert_plain_text() -> None:
    markup = (
        "h2. Problem\r\n*VPN* fails for [~accountid:5b10a2844c20165700ede21g]\r\n"
        "{code:java}print(1){code}\r\n!https://x/y.png|thumbnail! see [portal|https://help.example] "
        "{color:red}now{color}\r\n* one\r\n# two\r\n||a||b||\r\n|1|2|"
    )
    text = wiki_to_text(markup)
    assert text.splitlines()[0] == "Problem"
    assert "VPN fails for @5b10a284" in text
    assert "print(1)" in text and "y.png" not in text and "{color" not in text
    assert "portal (https://help.example)" in text
    assert "- one" in text and "1. two" in text and "a | b" in text


def test_adf_becomes_plain_text_and_deep_nesting_is_bounded() -> None:
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "Hello "},
                    {"type": "mention", "attrs": {"text": "@Dana"}},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "line 2"},
                ],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "item"}]}],
                    }
                ],
            },
        ],
    }
    assert adf_to_text(doc) == "Hello @Dana\nline 2\n\n- item"
    deep: dict[str, object] = {"type": "text", "text": "bottom"}
    for _ in range(5000):
        deep = {"type": "paragraph", "content": [deep]}
    assert adf_to_text(deep) == ""
