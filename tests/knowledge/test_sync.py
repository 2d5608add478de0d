"""A sync against the fake ServiceNow and Confluence servers keeps the stored articles in step and survives faults."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.domain.knowledge import KbArticle, KbPassage, KbSyncState
from service.knowledge import servicenow as sn_module
from service.knowledge.confluence import ConfluenceKnowledge
from service.knowledge.index import search_passages
from service.knowledge.servicenow import ServiceNowKnowledge
from service.knowledge.sync import make_sources, sync_source
from service.settings import Settings
from tests.fakes.fake_kb import FakeConfluence, FakeServiceNowKnowledge
from tests.knowledge.conftest import with_groups


def _stored(engine: Engine, source: str) -> dict[str, KbArticle]:
    with Session(engine) as s:
        return {a.external_id: a for a in s.exec(select(KbArticle).where(KbArticle.source == source)).all()}


def _titles_found(engine: Engine, query: str) -> list[str]:
    with Session(engine) as s:
        hits = search_passages(s, query, limit=5)
        titles = []
        for pid, _ in hits:
            passage = s.get(KbPassage, pid)
            assert passage is not None
            titles.append(passage.title)
        return titles


def _sn(settings: Settings, fake: FakeServiceNowKnowledge, **kb: object) -> ServiceNowKnowledge:
    return ServiceNowKnowledge(with_groups(settings, fake.settings(**kb)), sleep=lambda _s: None)


def _cf(settings: Settings, fake: FakeConfluence, **kb: object) -> ConfluenceKnowledge:
    return ConfluenceKnowledge(with_groups(settings, fake.settings(**kb)), sleep=lambda _s: None)


def test_servicenow_sync_follows_edits_retirements_and_deletions(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake = fake_sn_kb
    fake.put("a1", number="KB001", title="VPN authentication failed", html="<p>Reconnect <b>GlobalProtect</b>.</p>")
    fake.put("a2", number="KB002", title="Printer offline", html="<p>Re-add the printer from print01.</p>")
    fake.put("a3", number="KB003", title="Draft article", html="<p>Not yet.</p>", state="draft")
    cfg = with_groups(settings, fake.settings())

    report = sync_source(engine, cfg, _sn(settings, fake))
    assert report.ok and (report.added, report.updated, report.removed) == (2, 0, 0)
    stored = _stored(engine, "servicenow")
    assert set(stored) == {"a1", "a2"}
    assert stored["a1"].url == f"{fake.url}/kb_view.do?sysparm_article=KB001"
    assert stored["a1"].text == "Reconnect GlobalProtect."
    assert _titles_found(engine, "globalprotect reconnect")[0] == "VPN authentication failed"

    # An edit replaces the passages: the new words are found, the old ones no longer are.
    fake.put("a1", number="KB001", title="VPN authentication failed", html="<p>Renew the expired certificate.</p>")
    # Retired: leaves the knowledge base. Hard-deleted: only the listing can tell.
    fake.set_state("a2", "retired")
    report = sync_source(engine, cfg, _sn(settings, fake))
    assert report.ok and (report.added, report.updated, report.removed) == (0, 1, 1)
    assert _titles_found(engine, "globalprotect reconnect") == []
    assert _titles_found(engine, "expired certificate") == ["VPN authentication failed"]

    with Session(engine) as s:
        cursor = s.get(KbSyncState, "servicenow").cursor  # type: ignore[union-attr]
    fake.put("a4", number="KB004", title="Mailbox full", html="<p>Archive old mail.</p>")
    fake.delete("a1")
    before = len(fake.requests_to("GET", "kb_knowledge"))
    report = sync_source(engine, cfg, _sn(settings, fake))
    assert report.ok and (report.added, report.removed) == (1, 1)
    assert set(_stored(engine, "servicenow")) == {"a4"}
    with Session(engine) as s:
        state = s.get(KbSyncState, "servicenow")
        assert state is not None and state.lease_until is None and state.last_success_at is not None
        assert state.cursor and state.cursor > (cursor or "") and state.articles == 1 and state.removed_total == 2
        assert [p.title for p in s.exec(select(KbPassage)).all()] == ["Mailbox full"]
    # The incremental read started at the previous sync's cursor.
    first = fake.requests_to("GET", "kb_knowledge")[before]
    assert (first.param("sysparm_query") or "").startswith(f"sys_updated_on>={cursor}^")


def test_servicenow_sync_survives_429_and_5xx(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake = fake_sn_kb
    fake.put("a1", number="KB001", title="VPN", html="<p>Reconnect.</p>")
    fake.fail_next(429, headers={"Retry-After": "1"}, path="kb_knowledge")
    fake.fail_next(503, times=2, path="kb_knowledge")
    slept: list[float] = []
    source = ServiceNowKnowledge(with_groups(settings, fake.settings()), sleep=slept.append)
    report = sync_source(engine, with_groups(settings, fake.settings()), source)
    assert report.ok and report.added == 1 and report.retries == 3
    assert slept[0] == pytest.approx(1.0, abs=0.05)  # the server's Retry-After, not our own backoff


def test_a_listing_that_cannot_be_read_removes_nothing(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake = fake_sn_kb
    for i in range(3):
        fake.put(f"a{i}", number=f"KB00{i}", title=f"Article {i}", html=f"<p>Body {i}.</p>")
    cfg = with_groups(settings, fake.settings(max_retries=1))
    assert sync_source(engine, cfg, _sn(settings, fake, max_retries=1)).added == 3
    fake.delete("a0")
    # The published listing keeps failing past the retries: the sync reports it and keeps a0.
    fake.fail_query("workflow_state=published", 503, times=2)
    report = sync_source(engine, cfg, _sn(settings, fake, max_retries=1))
    assert not report.ok and report.removed == 0
    assert "503" in report.errors[0]
    assert set(_stored(engine, "servicenow")) == {"a0", "a1", "a2"}
    with Session(engine) as s:
        state = s.get(KbSyncState, "servicenow")
        assert state is not None and state.errors_total == 1 and "503" in (state.last_error or "")
    # Next time it reads: a0 goes.
    report = sync_source(engine, cfg, _sn(settings, fake, max_retries=1))
    assert report.ok and report.removed == 1


def test_an_emptied_listing_does_not_wipe_the_knowledge_base(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake = fake_sn_kb
    for i in range(4):
        fake.put(f"a{i}", number=f"KB00{i}", title=f"Article {i}", html=f"<p>Body {i}.</p>")
    cfg = with_groups(settings, fake.settings())
    sync_source(engine, cfg, _sn(settings, fake))
    for i in range(3):  # what an ACL change looks like from outside: the records simply vanish
        fake.delete(f"a{i}")
    report = sync_source(engine, cfg, _sn(settings, fake))
    assert report.removed == 0 and "none removed" in report.errors[0]
    assert len(_stored(engine, "servicenow")) == 4
    report = sync_source(engine, cfg, _sn(settings, fake), allow_mass_removal=True)
    assert report.ok and report.removed == 3


def test_keyset_paging_reads_every_record_sharing_one_second(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sn_module, "PAGE_SIZE", 3)
    fake = fake_sn_kb
    fake.put("x0", number="KB100", title="Article 0", html="<p>zero</p>")
    for i in range(1, 8):  # a bulk import: seven records stamped in the same second
        fake.put(f"x{i}", number=f"KB10{i}", title=f"Article {i}", html=f"<p>text {i}</p>", same_second=True)
    fake.put("x8", number="KB108", title="Article 8", html="<p>eight</p>")
    report = sync_source(engine, with_groups(settings, fake.settings()), _sn(settings, fake))
    assert report.ok and report.added == 9


def test_a_second_sync_waits_for_the_lease(
    settings: Settings, engine: Engine, fake_sn_kb: FakeServiceNowKnowledge
) -> None:
    fake = fake_sn_kb
    fake.put("a1", number="KB001", title="VPN", html="<p>Reconnect.</p>")
    cfg = with_groups(settings, fake.settings())
    fake.hang_next(1.0, path="kb_knowledge")  # the first sync's first read is slow (then retried)
    results = []
    first = threading.Thread(
        target=lambda: results.append(sync_source(engine, cfg, _sn(settings, fake, timeout_s=0.5)))
    )
    first.start()
    deadline = threading.Event()
    while not fake.requests_to("GET", "kb_knowledge") and not deadline.wait(0.02):
        pass
    second = sync_source(engine, cfg, _sn(settings, fake))
    first.join(timeout=30)
    assert second.busy and second.added == 0
    assert results and results[0].ok and results[0].added == 1


def test_confluence_sync_pages_through_spaces_and_follows_versions(
    settings: Settings, engine: Engine, fake_confluence: FakeConfluence
) -> None:
    fake = fake_confluence
    fake.page_size_cap = 2  # force cursor pagination
    fake.add_space("HR")
    for i in range(5):
        fake.put(str(1000 + i), title=f"IT page {i}", html=f"<p>Topic number {i}: printers and toner.</p>")
    fake.put("2000", title="Parental leave", html="<p>Apply in the HR system.</p>", space="HR")
    cfg = with_groups(settings, fake.settings(spaces=["IT", "HR"], confluence_languages={"HR": "de"}))
    source = ConfluenceKnowledge(cfg, sleep=lambda _s: None)
    report = sync_source(engine, cfg, source)
    assert report.ok and report.added == 6
    stored = _stored(engine, "confluence")
    assert stored["2000"].language == "de" and stored["2000"].collection == "HR"
    assert stored["1000"].url == f"{fake.url}/wiki/spaces/IT/pages/1000/IT+page+0"
    assert len(fake.requests_to("GET", r"/spaces/\d+/pages$")) >= 3  # 5 IT pages, 2 a page, plus HR

    # Unchanged pages are not fetched again; a new version is.
    body_requests = len(fake.requests_to("GET", r"/wiki/api/v2/pages$"))
    fake.put("1001", title="IT page 1", html="<p>Replaced: scanners now.</p>")
    fake.set_status("1002", "archived")
    fake.delete("1003")
    report = sync_source(engine, cfg, ConfluenceKnowledge(cfg, sleep=lambda _s: None))
    assert report.ok and (report.added, report.updated, report.removed) == (0, 1, 2)
    assert len(fake.requests_to("GET", r"/wiki/api/v2/pages$")) == body_requests + 1
    assert _titles_found(engine, "scanners") == ["IT page 1"]


def test_confluence_survives_429_and_keeps_a_space_it_could_not_list(
    settings: Settings, engine: Engine, fake_confluence: FakeConfluence
) -> None:
    fake = fake_confluence
    fake.add_space("HR")
    fake.put("1", title="Printers", html="<p>Toner.</p>")
    fake.put("2", title="Leave", html="<p>Holidays.</p>", space="HR")
    cfg = with_groups(settings, fake.settings(spaces=["IT", "HR"], max_retries=2))
    assert sync_source(engine, cfg, ConfluenceKnowledge(cfg, sleep=lambda _s: None)).added == 2

    fake.delete("1")
    fake.delete("2")
    hr_id = fake.spaces["HR"]["id"]
    fake.fail_next(429, headers={"Retry-After": "0"}, path="/spaces$")  # retried
    fake.fail_next(500, times=3, path=rf"/spaces/{hr_id}/pages")  # past the 2 retries: HR unreadable
    report = sync_source(engine, cfg, ConfluenceKnowledge(cfg, sleep=lambda _s: None))
    assert report.removed == 1 and any("space HR" in e for e in report.errors)
    assert set(_stored(engine, "confluence")) == {"2"}  # IT's deleted page went; HR's stays until HR is read


def test_sources_come_from_the_settings(settings: Settings) -> None:
    assert make_sources(settings) == []
    with pytest.raises(ValueError, match="ITSM_SERVICENOW__INSTANCE_URL"):
        make_sources(with_groups(settings, {"kb": {"servicenow_enabled": True}}))
    with pytest.raises(ValueError, match="ITSM_KB__CONFLUENCE_SPACES"):
        make_sources(
            with_groups(
                settings,
                {
                    "kb": {"confluence_url": "https://acme.atlassian.net"},
                    "jira": {"email": "bot@acme.example", "api_token": "t"},
                },
            )
        )
