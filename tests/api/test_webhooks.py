"""POST /webhooks/{source}: what is stored and enqueued for good input, and the answer to every bad input."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.api.app import create_app
from service.domain.tables import EventStatus, InboundEvent, LabelCorrection, Ticket
from service.samples import as_new_ticket, load_sample, make_delivery, sign_jira
from service.settings import Settings
from tests.api.conftest import LiveServer, queued_tasks
from tests.conftest import JIRA_SECRET, SN_SECRET, fixture_bytes, fixture_headers

Api = tuple[TestClient, redis.Redis, FastAPI]


def _events(engine: Engine) -> list[InboundEvent]:
    with Session(engine) as session:
        return list(session.exec(select(InboundEvent).order_by(InboundEvent.id)))  # type: ignore[arg-type]


def _tickets(engine: Engine) -> list[Ticket]:
    with Session(engine) as session:
        return list(session.exec(select(Ticket)))


def drain(app: FastAPI) -> None:
    """Let the enqueue relay publish everything submitted so far."""
    app.state.relay.stop()
    app.state.relay.start()


def post_fixture(client: TestClient, name: str) -> httpx.Response:
    return client.post(
        "/webhooks/jira",
        content=fixture_bytes(f"{name}.json"),
        headers=fixture_headers(f"{name}.headers.json"),
    )


def test_jira_issue_created_is_stored_normalised_and_queued(api: Api, engine: Engine) -> None:
    client, broker, app = api
    response = post_fixture(client, "jira_issue_created")
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    drain(app)
    [event] = _events(engine)
    assert (event.source, event.delivery_id, event.status) == (
        "jira",
        "69312270414585119",
        EventStatus.queued,
    )
    assert event.payload == ""  # raw payloads are kept only encrypted, under ITSM_PRIVACY__PAYLOAD_KEYS (tests/safety)
    [ticket] = _tickets(engine)
    assert ticket.external_key == "ITSD-42" and ticket.external_id == "10231"
    assert ticket.subject.startswith("VPN login fails")
    assert "GlobalProtect 6.2" in ticket.body and "\r" not in ticket.body
    assert ticket.priority == "Medium" and ticket.url == "https://acme-itsm.atlassian.net/browse/ITSD-42"
    assert queued_tasks(broker) == ["itsm.triage_event"]


def test_duplicate_delivery_answers_200_and_enqueues_nothing_new(api: Api, engine: Engine) -> None:
    client, broker, app = api
    assert post_fixture(client, "jira_issue_created").status_code == 202
    again = post_fixture(client, "jira_issue_created")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    drain(app)
    assert len(_events(engine)) == 1 and len(queued_tasks(broker)) == 1


def test_fifty_concurrent_copies_store_one_event_and_enqueue_once(
    redis_broker: tuple[Settings, redis.Redis], engine: Engine
) -> None:
    settings, broker = redis_broker
    body, headers = (
        fixture_bytes("jira_issue_created.json"),
        fixture_headers("jira_issue_created.headers.json"),
    )

    async def blast(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/webhooks/jira", content=body, headers=headers) for _ in range(50))
            )
        return [a.status_code for a in answers]

    with LiveServer(create_app(settings)) as server:
        codes = asyncio.run(blast(server.url))
    assert sorted(set(codes)) == [200, 202] and codes.count(202) == 1
    assert len(_events(engine)) == 1 and len(_tickets(engine)) == 1
    assert queued_tasks(broker) == ["itsm.triage_event"]


def test_redelivery_under_a_new_id_is_stored_but_not_triaged_twice(api: Api, engine: Engine) -> None:
    client, broker, app = api
    headers = fixture_headers("jira_issue_created.headers.json")
    assert post_fixture(client, "jira_issue_created").status_code == 202
    drain(app)
    headers["X-Atlassian-Webhook-Identifier"] = "another-delivery-id"
    response = client.post("/webhooks/jira", content=fixture_bytes("jira_issue_created.json"), headers=headers)
    assert response.status_code == 202 and response.json()["status"] == "ignored"
    drain(app)
    assert [e.status for e in _events(engine)] == [EventStatus.queued, EventStatus.ignored]
    assert len(queued_tasks(broker)) == 1


def test_own_echo_is_stored_and_ignored(api: Api, engine: Engine) -> None:
    client, broker, app = api
    response = post_fixture(client, "jira_issue_updated_by_bot")
    assert response.status_code == 202 and response.json() == {
        "status": "ignored",
        "event_id": 1,
        "ticket_id": 1,
        "reason": "own_echo",
    }
    response = post_fixture(client, "jira_comment_created_internal_by_bot")
    assert response.json()["reason"] == "own_echo"
    drain(app)
    assert queued_tasks(broker) == []


def test_agent_update_is_kept_as_label_corrections(api: Api, engine: Engine) -> None:
    client, broker, app = api
    post_fixture(client, "jira_issue_created")
    response = post_fixture(client, "jira_issue_updated_by_agent")
    assert response.status_code == 202 and response.json()["status"] == "applied"
    with Session(engine) as session:
        corrections = {(c.field, c.old_value, c.new_value, c.author) for c in session.exec(select(LabelCorrection))}
    assert corrections == {
        ("priority", "P2", "P1", "5b10ac8d82e05b22cc7d4ef5"),
        ("queue", "Network", "Access", "5b10ac8d82e05b22cc7d4ef5"),
    }
    [ticket] = _tickets(engine)
    assert ticket.priority == "Highest" and ticket.category == "Access"
    drain(app)
    assert len(queued_tasks(broker)) == 1  # only the creation was queued for triage


def test_out_of_order_updates_keep_the_newest_version(api: Api, engine: Engine) -> None:
    client, _, _ = api
    base = json.loads(fixture_bytes("jira_issue_updated_by_agent.json"))
    versions = {}
    for n in (1, 2, 3):
        data = json.loads(json.dumps(base))
        data["issue"]["fields"]["updated"] = f"2026-07-14T10:0{n}:00.000+0000"
        data["issue"]["fields"]["summary"] = f"version {n}"
        versions[n] = make_delivery(data, secret=JIRA_SECRET, delivery_id=f"v{n}")
    answers = [
        client.post("/webhooks/jira", content=versions[n].body, headers=versions[n].headers).json() for n in (3, 1, 2)
    ]
    assert [a["status"] for a in answers] == ["applied", "stale", "stale"]
    [ticket] = _tickets(engine)
    assert ticket.subject == "version 3"


def test_servicenow_incident_is_stored_and_queued(api: Api, engine: Engine) -> None:
    client, broker, app = api
    delivery = make_delivery(load_sample("servicenow_incident_webhook"), secret=SN_SECRET)
    response = client.post(delivery.path, content=delivery.body, headers=delivery.headers)
    assert response.status_code == 202, response.text
    drain(app)
    [ticket] = _tickets(engine)
    assert (ticket.source, ticket.external_key, ticket.extra["impact"]) == ("servicenow", "INC0010042", "2")
    assert [e.delivery_id for e in _events(engine)] == ["incident:9d385017c611228701d22104cc95c371:0"]
    assert queued_tasks(broker) == ["itsm.triage_event"]


def test_bad_signatures_get_401_and_store_nothing(api: Api, engine: Engine) -> None:
    client, _, _ = api
    body = fixture_bytes("jira_issue_created.json")
    jira_cases = [
        {},
        {"X-Hub-Signature": "sha256=" + "0" * 64},
        {"X-Hub-Signature": "garbage"},
        {"X-Hub-Signature": sign_jira(SN_SECRET, body)},  # the other source's secret
        {"X-Hub-Signature": sign_jira(JIRA_SECRET, body + b" ")},
    ]
    for headers in jira_cases:
        response = client.post("/webhooks/jira", content=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "invalid_signature"
    good = make_delivery(load_sample("servicenow_incident_webhook"), secret=SN_SECRET)
    stale = make_delivery(load_sample("servicenow_incident_webhook"), secret=SN_SECRET, now=time.time() - 600)
    sn_cases = [
        {k: v for k, v in good.headers.items() if k != "X-SN-Signature"},
        {**good.headers, "X-SN-Signature": "garbage-not-base64!"},
        {**good.headers, "X-SN-Signature": "AAAA"},
        stale.headers,
        {**make_delivery(load_sample("servicenow_incident_webhook"), secret=JIRA_SECRET).headers},
    ]
    for headers in sn_cases:
        assert client.post("/webhooks/servicenow", content=good.body, headers=headers).status_code == 401
    assert _events(engine) == []


def test_oversized_bodies_get_413_without_being_stored(api: Api, engine: Engine) -> None:
    client, _, app = api
    limit = app.state.settings.api.max_body_bytes
    big = b"{" + b" " * limit + b"}"
    response = client.post("/webhooks/jira", content=big, headers={"X-Hub-Signature": sign_jira(JIRA_SECRET, big)})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must trip while streaming
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = client.post("/webhooks/jira", content=chunks())
    assert response.status_code == 413
    assert _events(engine) == []


def _signed(raw: bytes) -> dict[str, str]:
    return {"X-Hub-Signature": sign_jira(JIRA_SECRET, raw), "X-Atlassian-Webhook-Identifier": "x"}


def test_malformed_bodies_get_400_never_500(api: Api, engine: Engine) -> None:
    client, _, _ = api
    cases = {
        b"{not json": "malformed_json",
        b"": "malformed_json",
        b'{"webhookEvent": "jira:issue_created", "x": "\xff\xfe"}': "invalid_utf8",
        b'{"webhookEvent": "jira:issue_created", "x": "a\\u0000b"}': "nul_byte",
        b'{"webhookEvent": "jira:issue_created", "x": NaN}': "malformed_json",
        b'{"webhookEvent": "jira:issue_created", "x": Infinity}': "malformed_json",
        b'{"webhookEvent": "jira:issue_created", "x": "\\ud800"}': "invalid_unicode",
        b"[" * 100_000 + b"]" * 100_000: "malformed_json",
    }
    for raw, code in cases.items():
        response = client.post("/webhooks/jira", content=raw, headers=_signed(raw))
        assert response.status_code == 400, (raw[:60], response.text)
        assert response.json()["error"] == code
    assert _events(engine) == []


def test_wrong_types_get_422_with_a_useful_message(api: Api, engine: Engine) -> None:
    client, _, _ = api
    good = json.loads(fixture_bytes("jira_issue_created.json"))
    bad_summary = json.loads(json.dumps(good))
    bad_summary["issue"]["fields"]["summary"] = {"evil": True}
    no_issue = {k: v for k, v in good.items() if k != "issue"}
    for payload, needle in [
        (bad_summary, "summary"),
        (no_issue, "issue"),
        ([1, 2], "body"),
        ({"webhookEvent": 7}, "webhookEvent"),
    ]:
        raw = json.dumps(payload).encode()
        response = client.post("/webhooks/jira", content=raw, headers=_signed(raw))
        assert response.status_code == 422, response.text
        assert needle in response.json()["detail"]
    assert _events(engine) == []


def test_duplicate_keys_keep_the_last_value(api: Api, engine: Engine) -> None:
    client, _, _ = api
    payload = as_new_ticket(load_sample("jira_issue_created"), 1)
    raw = json.dumps(payload).encode().replace(b'"summary":', b'"summary": "first", "summary":', 1)
    response = client.post("/webhooks/jira", content=raw, headers=_signed(raw))
    assert response.status_code == 202
    assert _tickets(engine)[0].subject == payload["issue"]["fields"]["summary"]


def test_unknown_source_is_404(api: Api) -> None:
    client, _, _ = api
    response = client.post("/webhooks/zendesk", content=b"{}")
    assert response.status_code == 404 and "jira" in response.json()["detail"]


def test_database_down_answers_503_and_readyz_fails(settings: Settings) -> None:
    down = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    with TestClient(create_app(down)) as client:
        response = post_fixture(client, "jira_issue_created")
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert client.get("/readyz").status_code == 503
        assert client.get("/livez").status_code == 200


def test_broker_down_still_acks_and_keeps_the_event_received(settings: Settings, engine: Engine) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    app = create_app(down)
    with TestClient(app) as client:
        response = post_fixture(client, "jira_issue_created")
        assert response.status_code == 202 and response.json()["status"] == "accepted"
        drain(app)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["broker"].startswith("degraded")
        assert "itsm_broker_up 0.0" in client.get("/metrics").text
    [event] = _events(engine)
    assert event.status == EventStatus.received  # held by the relay (retried after its cool-down), or swept


def test_metrics_count_webhooks_by_source_and_outcome(api: Api) -> None:
    client, _, _ = api
    post_fixture(client, "jira_issue_created")
    post_fixture(client, "jira_issue_created")
    client.post("/webhooks/jira", content=b"{}")
    text = client.get("/metrics").text
    assert 'itsm_webhooks_total{outcome="accepted",source="jira"} 1.0' in text
    assert 'itsm_webhooks_total{outcome="duplicate",source="jira"} 1.0' in text
    assert 'itsm_webhooks_total{outcome="invalid_signature",source="jira"} 1.0' in text
    assert "itsm_webhook_ack_seconds_bucket" in text


def test_own_account_is_looked_up_with_myself_when_not_configured(settings: Settings, fake_jira) -> None:
    jira = settings.jira.model_validate({**settings.jira.model_dump(), "account_id": None, **fake_jira.settings()})
    unset = settings.model_copy(update={"jira": jira})
    bot_comment = json.loads(fixture_bytes("jira_comment_created_internal_by_bot.json"))
    bot_comment["comment"]["author"]["accountId"] = fake_jira_bot_id(fake_jira)
    delivery = make_delivery(bot_comment, secret=JIRA_SECRET)
    with TestClient(create_app(unset)) as client:
        response = client.post(delivery.path, content=delivery.body, headers=delivery.headers)
    assert response.json()["reason"] == "own_echo"
    assert len(fake_jira.requests_to("GET", "/myself$")) == 2  # ours at start-up, and the test's own


def fake_jira_bot_id(fake_jira) -> str:
    """The account id the fake's /myself reports."""
    return httpx.get(f"{fake_jira.url}/rest/api/3/myself", auth=(fake_jira.email, fake_jira.api_token)).json()[
        "accountId"
    ]
