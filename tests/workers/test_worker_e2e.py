"""A real Celery worker process (not eager mode) on Redis and on the embedded SQLite broker, writing to a fake Jira.

Exactly one internal note and one public reply per ticket, with 429 / 500 / timeouts / lost responses injected.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.db import session_scope
from service.domain.tables import Delivery, DeliveryKind, DeliveryStatus, EventStatus, InboundEvent, Suggestion, Triage
from service.outbox import add_delivery, reply_delivery_key
from service.queue import DELIVER_TASK, TRIAGE_EVENT_TASK, enqueue, make_celery
from service.settings import Settings
from tests.fakes.fake_jira import FakeJira
from tests.fakes.fake_servicenow import FakeServiceNow
from tests.workers.conftest import seed_event
from tests.workers.harness import WorkerProcess, free_port, redis_server, wait_for

COMMENT = r"/comment$"
WORKER_ENV = {
    "ITSM_MODEL__BACKEND": "fake",
    "ITSM_MODEL__BATCH_SIZE": "8",
    "ITSM_MODEL__BATCH_WAIT_MS": "300",
    "ITSM_WORKER__DELIVERY_BACKOFF_BASE_S": "0.2",
    "ITSM_WORKER__DELIVERY_BACKOFF_CAP_S": "2",
    "ITSM_WORKER__SWEEP_INTERVAL_S": "1",
    "ITSM_WORKER__STUCK_GRACE_S": "2",
    "ITSM_WORKER__LEASE_S": "15",  # triage leases are renewed while a batch runs; past it a dead one is swept up
    "ITSM_WORKER__TASK_TIME_LIMIT_S": "60",
    "ITSM_WORKER__VISIBILITY_TIMEOUT_S": "120",
    "ITSM_JIRA__TIMEOUT_S": "1",
    "ITSM_POLICY": json.dumps({"priority": {"mode": "auto", "threshold": 0.0}}),
    "ITSM_LOG__JSON_LOGS": "false",
}


@pytest.fixture(params=["redis", "sqlite-broker"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> Iterator[str]:
    """A private Redis server, or the embedded SQLite broker file of this test."""
    if request.param == "redis":
        with redis_server(tmp_path) as url:
            yield url
    else:
        yield settings.broker_url


@pytest.fixture
def run_settings(settings: Settings, broker_url: str, fake_jira: FakeJira) -> Settings:
    """The producer's settings, matching the worker's environment."""
    return Settings(
        database_url=settings.database_url,
        broker_url=broker_url,
        var_dir=settings.var_dir,
        jira=fake_jira.settings(timeout_s=1),
        model={"backend": "fake"},
        worker={"task_time_limit_s": 60, "visibility_timeout_s": 120},
    )


@pytest.fixture
def start_worker(
    run_settings: Settings, fake_jira: FakeJira, fake_servicenow: FakeServiceNow, tmp_path: Path
) -> Iterator[object]:
    """Start `python -m workers` against this test's database, broker and fake Jira; always stopped."""
    started: list[WorkerProcess] = []

    def start(concurrency: int = 2, **extra: str) -> WorkerProcess:
        env = {
            **WORKER_ENV,
            "ITSM_DATABASE_URL": run_settings.database_url,
            "ITSM_BROKER_URL": run_settings.broker_url,
            "ITSM_VAR_DIR": str(tmp_path / "worker-var"),
            "ITSM_JIRA__BASE_URL": fake_jira.url,
            "ITSM_JIRA__EMAIL": fake_jira.email,
            "ITSM_JIRA__API_TOKEN": fake_jira.api_token,
            "ITSM_SERVICENOW__INSTANCE_URL": fake_servicenow.url,
            "ITSM_SERVICENOW__USERNAME": fake_servicenow.username,
            "ITSM_SERVICENOW__PASSWORD": fake_servicenow.password,
            "ITSM_SERVICENOW__TIMEOUT_S": "1",
            **extra,
        }
        w = WorkerProcess(
            env,
            queues="triage,draft,deliver",
            concurrency=concurrency,
            beat=True,
            log=tmp_path / f"worker-{len(started)}.log",
        )
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def _seed_tickets(engine: Engine, fake_jira: FakeJira, n: int, **kw: str) -> list[int]:
    """n tickets that exist in the fake Jira, with their inbound events committed (as the receiver does)."""
    ids = []
    for i in range(n):
        ext = str(30000 + i)
        fake_jira.add_issue(f"ITSD-{ext}", ext)
        ids.append(seed_event(engine, external_id=ext, subject=f"Printer {i} jammed", **kw))
    return ids


def _count(engine: Engine, model: type, *where: object) -> int:
    with Session(engine) as s:
        return len(s.exec(select(model).where(*where)).all())


def _inject_comment_faults(fake: FakeJira) -> None:
    """429 (Retry-After 1 s), 500, a timeout after the write, and a response lost after the write."""
    fake.fail_next(429, times=2, method="POST", path=COMMENT, headers={"Retry-After": "1"})
    fake.fail_next(500, times=2, method="POST", path=COMMENT)
    fake.hang_next(2.5, times=1, apply=True, method="POST", path=COMMENT)
    fake.drop_after_write_next(times=2, method="POST", path=COMMENT)


def _approve_all(engine: Engine) -> list[int]:
    """What the review UI does on approval: suggestion approved + a reply delivery in one transaction."""
    out = []
    with session_scope(engine) as s:
        for sug in s.exec(select(Suggestion)).all():
            assert sug.id is not None
            sug.status, sug.final_reply = "approved", f"Approved reply {sug.id}: {sug.draft}"
            s.add(sug)
            row = add_delivery(
                s,
                ticket_id=sug.ticket_id,
                kind=DeliveryKind.reply,
                idempotency_key=reply_delivery_key(sug.id),
                payload={"public_reply": sug.final_reply, "suggestion_id": sug.id},
            )
            assert row.id is not None
            out.append(row.id)
    return out


def test_exactly_one_note_and_one_reply_per_ticket_despite_faults(
    engine: Engine, run_settings: Settings, fake_jira: FakeJira, start_worker: object
) -> None:
    event_ids = _seed_tickets(engine, fake_jira, 6)
    _inject_comment_faults(fake_jira)
    producer = make_celery(run_settings)
    for eid in event_ids:
        enqueue(producer, TRIAGE_EVENT_TASK, eid)
    worker = start_worker()  # type: ignore[operator]
    sent = DeliveryStatus.sent
    wait_for(
        lambda: _count(engine, Delivery, Delivery.kind == "triage", Delivery.status == sent) == 6,
        timeout=120,
        what="6 triage notes delivered",
        worker=worker,
    )
    assert all(f.times == 0 for f in fake_jira.faults)  # every injected fault was actually hit
    reply_ids = _approve_all(engine)
    assert len(reply_ids) == 6
    _inject_comment_faults(fake_jira)
    for rid in reply_ids:
        enqueue(producer, DELIVER_TASK, rid)
    wait_for(
        lambda: _count(engine, Delivery, Delivery.kind == "reply", Delivery.status == sent) == 6,
        timeout=120,
        what="6 replies delivered",
        worker=worker,
    )

    assert all(f.times == 0 for f in fake_jira.faults)
    for i in range(6):
        issue = fake_jira.issue(str(30000 + i))
        assert len(issue.internal_comments()) == 1, issue.comments
        assert len(issue.public_comments()) == 1, issue.comments
        assert "Approved reply" in issue.public_comments()[0].plain
        assert "Suggested (not applied)" in issue.internal_comments()[0].plain
    with Session(engine) as s:
        assert {e.status for e in s.exec(select(InboundEvent))} == {EventStatus.triaged}
        assert {sg.status for sg in s.exec(select(Suggestion))} == {"delivered"}
        batches = {t.timings["batch_size"] for t in s.exec(select(Triage))}
        assert max(batches) > 1  # the six waiting events were run through the model together
    # Never earlier than Retry-After: the retry of each 429'd request came at least 1 s later.
    posts = fake_jira.requests_to("POST", COMMENT)
    for i, r in enumerate(posts):
        if r.status == 429:
            retry = next(p for p in posts[i + 1 :] if p.path == r.path)
            assert retry.at - r.at >= 1.0


def test_events_left_received_are_triaged_via_the_sweeper(
    engine: Engine, run_settings: Settings, fake_jira: FakeJira, start_worker: object
) -> None:
    """The broker was down at ingest: nothing was published; beat's sweeper finds and enqueues them."""
    _seed_tickets(engine, fake_jira, 3, status=EventStatus.received)
    port = free_port()
    worker = start_worker(concurrency=1, ITSM_WORKER__METRICS_PORT=str(port))  # type: ignore[operator]
    wait_for(
        lambda: _count(engine, Delivery, Delivery.status == DeliveryStatus.sent) == 3,
        timeout=90,
        what="3 notes delivered",
        worker=worker,
    )
    for i in range(3):
        assert len(fake_jira.issue(str(30000 + i)).internal_comments()) == 1
    # The parent serves what its pool child recorded (multiprocess mode) plus the database backlog.
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'itsm_tickets_triaged_total{source="jira"} 3.0' in text
    assert "itsm_triage_batch_size_count" in text and "itsm_model_latency_seconds_bucket" in text
    assert 'itsm_deliveries_total{kind="triage",outcome="sent"} 3.0' in text
    assert 'itsm_outbox_deliveries{kind="triage",status="sent"} 3.0' in text


def test_pool_child_killed_mid_batch_still_triages_once(
    engine: Engine, run_settings: Settings, fake_jira: FakeJira, start_worker: object
) -> None:
    """RELIABILITY T6: SIGKILL the pool child while the (fake) model runs; the work is redone exactly once."""
    (eid,) = _seed_tickets(engine, fake_jira, 1, body="Slow one FAKE_LLM_SLEEP=4")
    worker = start_worker(concurrency=1)  # type: ignore[operator]
    enqueue(make_celery(run_settings), TRIAGE_EVENT_TASK, eid)
    wait_for(
        lambda: _count(engine, InboundEvent, InboundEvent.status == EventStatus.processing) == 1,
        timeout=60,
        what="the batch to start",
        worker=worker,
    )
    children = worker.pool_children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    wait_for(
        lambda: _count(engine, Delivery, Delivery.status == DeliveryStatus.sent) == 1,
        timeout=90,
        what="the note after the crash",
        worker=worker,
    )
    assert len(fake_jira.issue("30000").internal_comments()) == 1
    with Session(engine) as s:
        ev = s.get(InboundEvent, eid)
        assert ev is not None and ev.status == EventStatus.triaged and ev.attempts == 2
        assert len(s.exec(select(Triage)).all()) == 1


def test_servicenow_gets_one_work_note_and_one_comment_per_incident_despite_faults(
    engine: Engine, run_settings: Settings, fake_servicenow: FakeServiceNow, start_worker: object
) -> None:
    sys_ids = [f"{i:032x}" for i in range(1, 5)]
    for sid in sys_ids:
        fake_servicenow.add_incident(sid)
        seed_event(engine, source="servicenow", external_id=sid, subject="Email outage", body="No mail since 9:00")
    patch = r"/table/incident/"
    for fake_patch in (
        lambda: fake_servicenow.fail_next(429, times=2, method="PATCH", path=patch, headers={"Retry-After": "1"}),
        lambda: fake_servicenow.fail_next(503, times=1, method="PATCH", path=patch),
        lambda: fake_servicenow.hang_next(2.5, times=1, apply=True, method="PATCH", path=patch),
        lambda: fake_servicenow.drop_after_write_next(times=1, method="PATCH", path=patch),
    ):
        fake_patch()
    producer = make_celery(run_settings)
    with Session(engine) as s:
        for eid in s.exec(select(InboundEvent.id)):
            enqueue(producer, TRIAGE_EVENT_TASK, eid)
    worker = start_worker()  # type: ignore[operator]
    sent = DeliveryStatus.sent
    wait_for(
        lambda: _count(engine, Delivery, Delivery.kind == "triage", Delivery.status == sent) == 4,
        timeout=120,
        what="4 work notes delivered",
        worker=worker,
    )
    assert all(f.times == 0 for f in fake_servicenow.faults)
    for rid in _approve_all(engine):
        enqueue(producer, DELIVER_TASK, rid)
    wait_for(
        lambda: _count(engine, Delivery, Delivery.kind == "reply", Delivery.status == sent) == 4,
        timeout=120,
        what="4 comments delivered",
        worker=worker,
    )
    for sid in sys_ids:
        incident = fake_servicenow.incident(sid)
        assert len(incident.work_notes) == 1, incident.journal
        assert len(incident.comments) == 1, incident.journal
        assert incident.priority_writes == []  # ServiceNow computes priority; we never write it
