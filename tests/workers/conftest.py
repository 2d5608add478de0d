"""Worker test helpers: seeding tickets/events as the webhook receiver would, and a scripted TicketWriter."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from service.db import session_scope
from service.domain.schemas import WriteBack, WriteOutcome
from service.domain.tables import EventStatus, InboundEvent, Ticket
from service.settings import Settings
from workers.delivery import DeliveryContext
from workers.drafts import DraftContext, draft_triage
from workers.fake_triager import FakeTriager
from workers.pipeline import PipelineContext, TriageReport, triage_event

_seq = itertools.count(1)


def seed_event(
    engine: Engine,
    *,
    source: str = "jira",
    subject: str = "VPN does not connect",
    body: str = "Since this morning the VPN client fails with error 809.",
    status: EventStatus = EventStatus.queued,
    external_id: str | None = None,
    version: int = 1,
) -> int:
    """Commit a Ticket + InboundEvent exactly as the receiver does before enqueueing; returns the event id."""
    n = next(_seq)
    ext = external_id or f"{10000 + n}"
    with session_scope(engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.source == source, Ticket.external_id == ext)).first()
        if ticket is None:
            ticket = Ticket(
                source=source,
                external_id=ext,
                external_key=f"ITSD-{ext}",
                subject=subject,
                body=body,
                source_version=version,
            )
            session.add(ticket)
            session.flush()
        ev = InboundEvent(
            source=source,
            delivery_id=f"d-{n}-{ext}",
            event_type="jira:issue_created",
            business_key=f"{source}:{ext}:{version}:created",
            external_id=ext,
            ticket_id=ticket.id,
            status=status,
            payload="{}",
        )
        session.add(ev)
        session.flush()
        assert ev.id is not None
        return ev.id


@dataclass
class ScriptedWriter:
    """A TicketWriter double for unit tests of the delivery state machine: raises the scripted errors in order."""

    source: str = "jira"
    script: list[Exception | None] = field(default_factory=list)
    calls: list[WriteBack] = field(default_factory=list)

    def write(self, action: WriteBack) -> WriteOutcome:
        self.calls.append(action)
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        return WriteOutcome(external_ref=f"ref-{len(self.calls)}", written_fields=dict(action.fields))


@dataclass
class Recorder:
    """Collects what the flow enqueues instead of publishing it."""

    sent: list[tuple[str, int, float | None]] = field(default_factory=list)

    def __call__(self, task: str, row_id: int, countdown: float | None) -> None:
        self.sent.append((task, row_id, countdown))

    def ids(self, task: str) -> list[int]:
        return [i for t, i, _ in self.sent if t == task]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def fake_llm(settings: Settings) -> FakeTriager:
    return FakeTriager(latency_ms=settings.model.fake_latency_ms)


@pytest.fixture
def pipeline_ctx(engine: Engine, settings: Settings, fake_llm: FakeTriager, recorder: Recorder) -> PipelineContext:
    return PipelineContext(engine, settings, lambda: fake_llm, recorder)


@pytest.fixture
def draft_ctx(engine: Engine, settings: Settings, fake_llm: FakeTriager, recorder: Recorder) -> DraftContext:
    return DraftContext(engine, settings, lambda: fake_llm, recorder)


def triage_and_draft(pipeline_ctx: PipelineContext, draft_ctx: DraftContext, event_id: int) -> TriageReport:
    """Both stages for one message, as two workers would run them: the labels, then each draft they handed over."""
    report = triage_event(pipeline_ctx, event_id)
    for triage_id in report.drafts:
        draft_triage(draft_ctx, triage_id)
    return report


@pytest.fixture
def writer() -> ScriptedWriter:
    return ScriptedWriter()


@pytest.fixture
def delivery_ctx(engine: Engine, settings: Settings, writer: ScriptedWriter, recorder: Recorder) -> DeliveryContext:
    writers: Callable[[str], ScriptedWriter] = lambda _source: writer  # noqa: E731
    return DeliveryContext(engine, settings, writers, recorder)
