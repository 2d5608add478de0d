"""Shadow predictions in the triage worker: the shadow adapter labels the same batch after the live one, its labels
are stored beside the live triage and never act; a failing shadow never holds up or fails the live triage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.domain.learning import ShadowPrediction
from service.domain.schemas import CanonicalTicket, TriageResult
from service.domain.tables import Delivery, Triage
from service.learning import registry
from service.settings import Settings
from tests.learning.fixtures import adapter_dir
from tests.workers.conftest import Recorder, seed_event
from workers.adapter_sync import store_shadow
from workers.fake_triager import FakeTriager
from workers.pipeline import PipelineContext, triage_event
from workers.store import Work


class PrinterShadow(FakeTriager):
    """A shadow 'adapter' that files everything under a queue the live one does not know."""

    adapter_version = "v2"

    def classify(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        results = super().classify(tickets)
        for r in results:
            r.predictions["queue"] = r.predictions["queue"].model_copy(update={"label": "Printers"})
        return results


class BrokenShadow(FakeTriager):
    def classify(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        raise RuntimeError("shadow adapter out of memory")


def _shadow_id(settings: Settings, engine: Engine, tmp_path: Path) -> int:
    cfg = settings.model_copy(update={"learning": settings.learning.model_copy(update={"cache_dir": tmp_path})})
    registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    row = registry.register(engine, cfg, adapter_dir(tmp_path, "retrained"), actor="t")
    registry.start_shadow(engine, row.version, actor="t")
    return row.id or 0


def test_shadow_labels_are_stored_beside_the_live_triage_and_never_act(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    shadow_id = _shadow_id(settings, engine, tmp_path)
    live, shadow = FakeTriager(), PrinterShadow()
    ctx = PipelineContext(engine, settings, lambda: live, Recorder(), shadow=lambda: (shadow_id, shadow))
    events = [seed_event(engine, subject=f"Printer {i} jams", body="Paper jam on every page.") for i in range(3)]
    report = triage_event(ctx, events[0])
    assert sorted(report.triaged) == sorted(events)
    with Session(engine) as s:
        triages = s.exec(select(Triage).order_by(col(Triage.id))).all()
        rows = {r.triage_id: r for r in s.exec(select(ShadowPrediction)).all()}
        notes = [d.payload["note"] for d in s.exec(select(Delivery)).all()]
    assert len(triages) == 3 and set(rows) == {t.id for t in triages}
    assert all(rows[t.id].adapter_id == shadow_id for t in triages)
    assert all(rows[t.id].predictions["queue"]["label"] == "Printers" for t in triages)
    assert all(t.predictions["queue"]["label"] != "Printers" for t in triages)  # the live labels are what is stored
    assert not any("Printers" in n for n in notes)  # ... and what the ITSM tool is told
    work = [Work(event_id=0, ticket=_ticket(engine, t.ticket_id), flags=[]) for t in triages]
    results = shadow.classify([CanonicalTicket(source="jira", external_id="x", external_key="x", subject="a")] * 3)
    assert store_shadow(engine, work, shadow_id, results) == 0  # a redelivered batch adds nothing twice


def test_a_failing_shadow_never_fails_the_live_batch(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    shadow_id = _shadow_id(settings, engine, tmp_path)
    ctx = PipelineContext(engine, settings, FakeTriager, Recorder(), shadow=lambda: (shadow_id, BrokenShadow()))
    event = seed_event(engine)
    assert triage_event(ctx, event).triaged == [event]
    with Session(engine) as s:
        assert s.exec(select(ShadowPrediction)).first() is None
        assert len(s.exec(select(Triage)).all()) == 1


def _ticket(engine: Engine, ticket_id: int):  # type: ignore[no-untyped-def]
    from service.domain.tables import Ticket

    with Session(engine) as s:
        return s.get(Ticket, ticket_id)
