"""The draft stage: reply suggestions after the labels, on their own queue; exactly once per ticket version, retried,
swept, and never in the way of another ticket's labels."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.schemas import CanonicalTicket, DraftResult
from service.domain.tables import Delivery, DraftStatus, Suggestion, Ticket, Triage, utcnow
from service.queue import DELIVER_TASK, DRAFT_TASK
from service.settings import Settings
from tests.workers.conftest import Recorder, seed_event
from workers.drafts import DraftContext, draft_triage
from workers.fake_triager import FakeTriager
from workers.pipeline import PipelineContext, triage_event
from workers.sweeper import sweep


def _triage(engine: Engine, triage_id: int) -> Triage:
    with Session(engine) as s:
        row = s.get(Triage, triage_id)
        assert row is not None
        return row


def _labelled(pipeline_ctx: PipelineContext, engine: Engine, **kw: object) -> int:
    """One ticket through the first stage; returns its triage id (draft pending)."""
    report = triage_event(pipeline_ctx, seed_event(engine, **kw))  # type: ignore[arg-type]
    assert len(report.drafts) == 1
    return report.drafts[0]


def test_a_slow_draft_never_delays_another_tickets_labels(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, fake_llm: FakeTriager
) -> None:
    """Two workers as `itsm-triage run` starts them: while one drafts ticket A (slowly), the other stores ticket B's
    labels and hands B's note to delivery; A's draft arrives after, and B's draft is its own."""
    fake_llm.draft_latency_ms = 3000
    a = _labelled(pipeline_ctx, engine, body="first ticket, its draft is slow")
    drafting = threading.Thread(target=draft_triage, args=(draft_ctx, a))
    drafting.start()
    try:
        for _ in range(200):  # the draft worker has claimed A
            if _triage(engine, a).draft_status == DraftStatus.drafting:
                break
            time.sleep(0.02)
        b_report = triage_event(pipeline_ctx, seed_event(engine, body="second ticket arrives meanwhile"))
        assert b_report.triaged and b_report.deliveries  # B's labels and note are stored ...
        assert drafting.is_alive() and _triage(engine, a).draft_status == DraftStatus.drafting  # ... A still drafts
    finally:
        drafting.join(30)
    # the draft task keeps going while drafts wait: B's was drafted after A's, in the same task
    b = b_report.drafts[0]
    assert _triage(engine, a).draft_status == _triage(engine, b).draft_status == DraftStatus.ready
    assert fake_llm.draft_batches == [1, 1] and draft_triage(draft_ctx, b).claimed == []


def test_pending_drafts_are_drafted_together_and_each_once(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, fake_llm: FakeTriager
) -> None:
    settings.model.batch_size = 1  # one ticket per label batch, so three drafts wait
    settings.model.draft_batch_size = 8
    ids = [_labelled(pipeline_ctx, engine, body=f"ticket {i}") for i in range(3)]
    report = draft_triage(draft_ctx, ids[1])
    assert sorted(report.drafted) == sorted(ids) and fake_llm.draft_batches == [3]
    for triage_id in ids:  # the other messages find their drafts done
        assert draft_triage(draft_ctx, triage_id).claimed == []
    with Session(engine) as s:
        assert sorted(x.triage_id for x in s.exec(select(Suggestion))) == sorted(ids)
        assert len(s.exec(select(Delivery)).all()) == 3  # the three label notes; drafts write no note


class _PastRepliesFirst(FakeTriager):
    """A model whose tickets marked "needs an LLM draft" take 2 s to draft and the rest (past replies) none."""

    def needs_generation(self, tickets: Sequence[CanonicalTicket]) -> list[bool]:
        return ["needs an LLM draft" in t.body for t in tickets]

    def draft(
        self, tickets: Sequence[CanonicalTicket], evidence: Sequence[str | None] | None = None
    ) -> list[DraftResult]:
        self.draft_latency_ms = 2000 if any(self.needs_generation(tickets)) else 0
        return super().draft(tickets, evidence)


def test_past_replies_are_stored_before_the_llm_drafts_of_their_batch(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, recorder: Recorder
) -> None:
    """One ticket of a drafting batch needs a slow LLM draft: the past replies of the others are stored while it is
    being drafted, not after; each suggestion once."""
    settings.model.batch_size = 1
    settings.model.draft_batch_size = 8
    model = _PastRepliesFirst()
    ctx = DraftContext(engine, settings, lambda: model, recorder)
    slow = _labelled(pipeline_ctx, engine, body="a ticket that needs an LLM draft")
    fast = [_labelled(pipeline_ctx, engine, body=f"a ticket with a past reply {i}") for i in range(3)]
    drafting = threading.Thread(target=draft_triage, args=(ctx, slow))
    drafting.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            _triage(engine, t).draft_status == DraftStatus.ready for t in fast
        ):
            time.sleep(0.02)
        assert all(_triage(engine, t).draft_status == DraftStatus.ready for t in fast)
        assert _triage(engine, slow).draft_status == DraftStatus.drafting and drafting.is_alive()
    finally:
        drafting.join(30)
    assert _triage(engine, slow).draft_status == DraftStatus.ready
    assert model.draft_batches == [3, 1]  # one batch claimed, drafted in two calls: past replies, then the draft
    with Session(engine) as s:
        assert sorted(x.triage_id for x in s.exec(select(Suggestion))) == sorted([slow, *fast])


def test_a_failing_draft_is_retried_with_backoff_then_marked_failed(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, recorder: Recorder
) -> None:
    settings.worker.max_attempts = 2
    tid = _labelled(pipeline_ctx, engine, body="FAKE_DRAFT_RAISE please")
    first = draft_triage(draft_ctx, tid)
    row = _triage(engine, tid)
    assert (
        first.failed == [tid] and row.draft_status == DraftStatus.pending and "FakeLLMError" in (row.draft_error or "")
    )
    assert row.draft_lease_until is not None and row.draft_lease_until > utcnow()  # not before the backoff
    assert [(t, i, c) for t, i, c in recorder.sent if t == DRAFT_TASK][-1] == (DRAFT_TASK, tid, 2.0)
    second = draft_triage(draft_ctx, tid)  # the retry message (the second attempt fails too)
    assert second.dead == [tid] and _triage(engine, tid).draft_status == DraftStatus.failed
    assert draft_triage(draft_ctx, tid).claimed == []
    with Session(engine) as s:
        assert s.exec(select(Suggestion)).all() == []


def test_a_draft_for_an_older_version_of_the_ticket_is_skipped(
    engine: Engine, pipeline_ctx: PipelineContext, draft_ctx: DraftContext
) -> None:
    old = _labelled(pipeline_ctx, engine, external_id="777", version=1, body="first version")
    with session_scope(engine) as s:  # an edit arrives (the receiver updates the ticket in place)
        s.execute(update(Ticket).where(col(Ticket.external_id) == "777").values(source_version=2, body="edited"))
    new = _labelled(pipeline_ctx, engine, external_id="777", version=2)
    report = draft_triage(draft_ctx, old)
    assert report.superseded == [old] and new in report.drafted
    assert _triage(engine, old).draft_status == DraftStatus.none


def test_a_dead_drafters_claim_is_taken_over_and_the_sweeper_resends_lost_drafts(
    engine: Engine, settings: Settings, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, recorder: Recorder
) -> None:
    lost, stale = _labelled(pipeline_ctx, engine, body="lost message"), _labelled(pipeline_ctx, engine, body="x")
    past = utcnow() - timedelta(seconds=settings.worker.stuck_grace_s + 5)
    with session_scope(engine) as s:
        # `lost`: pending, its message never arrived; `stale`: claimed by a worker that died (lease expired)
        s.execute(update(Triage).where(col(Triage.id) == lost).values(created_at=past))
        s.execute(
            update(Triage)
            .where(col(Triage.id) == stale)
            .values(draft_status=DraftStatus.drafting, draft_attempts=1, draft_lease_until=past, created_at=past)
        )
    recorder.sent.clear()
    report = sweep(engine, settings, recorder)
    assert sorted(report.drafts_requeued) == sorted([lost, stale]) and sorted(recorder.ids(DRAFT_TASK)) == sorted(
        [lost, stale]
    )
    assert sweep(engine, settings, recorder).drafts_requeued == []  # not again before the next grace period
    for tid in (lost, stale):
        assert draft_triage(draft_ctx, tid).drafted == [tid]
    assert recorder.ids(DELIVER_TASK) == []  # no note for a draft


def test_an_empty_ticket_asks_for_no_draft(engine: Engine, pipeline_ctx: PipelineContext) -> None:
    report = triage_event(pipeline_ctx, seed_event(engine, subject="", body=""))
    assert report.triaged and report.drafts == []
    with Session(engine) as s:
        assert s.exec(select(Triage)).one().draft_status == DraftStatus.none


def _seed_kb(engine: Engine) -> None:
    """The labelled knowledge base of tests/knowledge, stored as a sync would store it."""
    from service.knowledge.source import ArticleRecord
    from service.knowledge.sync import apply_record
    from tests.knowledge.conftest import articles

    with session_scope(engine) as s:
        for a in articles():
            record = ArticleRecord(
                external_id=a["id"], number=a["id"], collection="IT", title=a["title"],
                url=f"https://kb.example.com/{a['id']}", language=a["lang"], html=a["html"], version="1",
                updated_at=utcnow(), published=True,
            )  # fmt: skip
            apply_record(s, "servicenow", record, now=utcnow())


def test_a_draft_is_grounded_in_the_knowledge_base_and_records_what_it_cites(
    engine: Engine, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, fake_llm: FakeTriager
) -> None:
    _seed_kb(engine)
    answered = _labelled(
        pipeline_ctx, engine, subject="GlobalProtect authentication failed",
        body="The VPN client GlobalProtect keeps saying authentication failed after I enter the portal address.",
    )  # fmt: skip
    unanswerable = _labelled(pipeline_ctx, engine, subject="Coffee machine", body="The coffee machine is empty")
    draft_triage(draft_ctx, answered)
    with Session(engine) as s:
        by_triage = {x.triage_id: x for x in s.exec(select(Suggestion))}
    cited = by_triage[answered]
    assert cited.sources and cited.sources[0]["kind"] == "kb" and "GlobalProtect" in cited.sources[0]["title"]
    # the model was shown the passages as quoted data; the draft names the article with its link, which is backed
    shown = next(e for batch in fake_llm.evidence_seen for e in batch if e and "GlobalProtect" in e)
    assert shown.splitlines()[1].startswith("> ")
    url = cited.sources[0]["url"]
    assert f"({url})" in cited.draft and "unsupported_link" not in _triage(engine, answered).flags
    # nothing above the score floor: the draft cites nothing and the suggestion says so ([] = looked, found none)
    assert by_triage[unanswerable].sources == [] and "References" not in by_triage[unanswerable].draft


def test_an_invented_link_in_a_draft_is_removed_and_flagged(
    engine: Engine, pipeline_ctx: PipelineContext, draft_ctx: DraftContext, fake_llm: FakeTriager
) -> None:
    fake_llm.draft_extra = " Reset it at https://evil.example.net/reset or mail helpdesk@evil.example.net."
    tid = _labelled(pipeline_ctx, engine, body="Password expired, see https://portal.example.com/pw")
    draft_triage(draft_ctx, tid)
    with Session(engine) as s:
        draft = s.exec(select(Suggestion)).one().draft
    assert "evil.example.net" not in draft and "[link removed" in draft and "[address removed" in draft
    assert {"unsupported_link", "unsupported_email"} <= set(_triage(engine, tid).flags)
