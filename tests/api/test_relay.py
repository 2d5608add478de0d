"""The enqueue relay across a broker blip: it retries its own backlog after the cool-down, without the sweeper."""

from __future__ import annotations

import time

import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.api.app import create_app
from service.domain.tables import EventStatus, InboundEvent
from service.samples import as_new_ticket, load_sample, make_delivery
from service.settings import Settings
from tests.api.conftest import REDIS_DB, queued_tasks
from tests.conftest import JIRA_SECRET
from tests.reliability.harness.proxy import FaultProxy


def _statuses(engine: Engine) -> list[EventStatus]:
    with Session(engine) as session:
        return [e.status for e in session.exec(select(InboundEvent).order_by(InboundEvent.id))]  # type: ignore[arg-type]


def _post_new_tickets(client: TestClient, first: int, count: int) -> None:
    sample = load_sample("jira_issue_created")
    for n in range(first, first + count):
        delivery = make_delivery(as_new_ticket(sample, n), secret=JIRA_SECRET)
        response = client.post(delivery.path, content=delivery.body, headers=delivery.headers)
        assert response.status_code == 202, response.text


def test_events_submitted_while_the_broker_is_down_are_published_when_it_is_back(
    redis_broker: tuple[Settings, redis.Redis], engine: Engine
) -> None:
    settings, broker = redis_broker
    with FaultProxy(6379) as proxy:
        proxy.faults.refuse = True  # the broker is down: every publish fails
        via_proxy = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"})
        app = create_app(via_proxy)
        with TestClient(app) as client:
            _post_new_tickets(client, 1, 3)
            deadline = time.monotonic() + 30
            while app.state.relay.healthy and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not app.state.relay.healthy, "the relay never saw the broker fail"
            _post_new_tickets(client, 4, 2)  # during the cool-down: held, not dropped
            assert _statuses(engine) == [EventStatus.received] * 5 and queued_tasks(broker) == []

            proxy.faults.refuse = False  # broker back; no further webhook arrives to nudge the relay
            deadline = time.monotonic() + 30
            while _statuses(engine) != [EventStatus.queued] * 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _statuses(engine) == [EventStatus.queued] * 5
            assert queued_tasks(broker) == ["itsm.triage_event"] * 5
            assert app.state.relay.healthy
