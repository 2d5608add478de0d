"""`itsm-triage history import --source servicenow` against a fake instance with an incident history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from service.domain.sanitize import scrub
from tests.fakes.history_corpus import PastComment
from tests.fakes.history_servicenow import HistoryServiceNow
from tests.history.conftest import cli, import_in_process, rows


def test_keyset_paging_reads_every_incident_once_across_a_bulk_closure_longer_than_a_page(
    sn_instance: Callable[..., HistoryServiceNow], tmp_path: Path
) -> None:
    # Tickets 30..54 were closed in the same second: 25 rows tied on sys_updated_on, pages of 10.
    fake = sn_instance(tickets=100, bulk=(1000, 30, 25))
    out = tmp_path / "sn.jsonl"
    result = cli(fake, out, "--page-size", "10")
    assert result.exit_code == 0, result.output

    got = rows(out)
    want = [t for t in fake.history if t.n not in (88, 96)]  # 88 closed as a duplicate, 96 re-files 95
    assert [r["id"] for r in got] == [f"servicenow:{t.number}" for t in want]
    listing = fake.requests_to("GET", r"/table/incident$")
    queries = [(r.param("sysparm_query") or "", r.param("sysparm_offset")) for r in listing]
    assert all(q.startswith("stateIN6,7^sys_updated_on>=") and q.endswith("^ORDERBYsys_updated_on^ORDERBYsys_id")
               for q, _ in queries)  # fmt: skip
    tied = fake.history[30].updated_at.strftime("%Y-%m-%d %H:%M:%S")
    assert [o for q, o in queries if f">={tied}^" in q] == ["10", "20"]  # skips the tied rows already read
    assert listing[-1].response == {"result": []}  # the end is an empty page, not a short one
    assert all(r.param("sysparm_display_value") == "all" for r in listing)
    journal = fake.requests_to("GET", r"/sys_journal_field$")
    assert len(journal) == len(listing) - 1  # one journal query per page of incidents

    for r, t in zip(got, want, strict=True):
        assert (r["queue"], r["priority"]) == (t.queue, t.priority)  # group name; P-label from impact x urgency
        assert r["reply"] == (scrub(t.reply.strip()).text if t.reply else None), t.number
        assert r["subject"] == scrub(t.subject).text
    assert "read 100 · written 98 · skipped 2" in result.output
    assert "reply authors: alex.agent" in result.output


def test_journal_entries_of_the_caller_the_service_and_the_system_are_not_replies(
    sn_instance: Callable[..., HistoryServiceNow], tmp_path: Path
) -> None:
    fake = sn_instance(tickets=0)
    a = fake.history.add(
        subject="Teams crashes",
        body="Teams closes itself when I share my screen.",
        priority="P2",
        comments=(
            PastComment("reporter", True, "Still crashing."),
            PastComment("bot", True, "[AI triage] we are on it"),
            PastComment("system", True, "Incident automatically closed after 7 days."),
            PastComment("agent", False, "Work note: known issue KB0012."),
        ),
    )
    b = fake.history.add(
        subject="Duplicate of INC1",
        body="Same as before.",
        resolution="Duplicate",
        comments=(PastComment("agent", True, "Duplicate."),),
    )
    c = fake.history.add(
        subject="Need a monitor",
        body="Second monitor please.",
        priority="P4",
        comments=(
            PastComment("agent", True, "[code]<p>Ordered a <b>27 inch</b> monitor.</p>[/code]"),
            PastComment("agent", True, "It arrives Friday."),
        ),
    )
    out = tmp_path / "j.jsonl"
    result = cli(fake, out, "--label", "team=assignment_group", "--label", "prio=priority", "--label", "cat=category")
    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id[f"servicenow:{a.number}"]["reply"] is None
    assert f"servicenow:{b.number}" not in by_id and "closed_as_duplicate 1" in result.output
    assert by_id[f"servicenow:{c.number}"]["reply"] == "Ordered a 27 inch monitor."
    assert {k: by_id[f"servicenow:{a.number}"][k] for k in ("team", "prio", "cat")} == {
        "team": "Technical Support",
        "prio": "P2",
        "cat": "software",
    }


def test_servicenow_rate_limit_and_outage_are_waited_out_and_a_resume_continues_the_keyset(
    sn_instance: Callable[..., HistoryServiceNow], tmp_path: Path
) -> None:
    fake = sn_instance(tickets=45, bulk=(1000, 10, 15))
    whole = tmp_path / "whole.jsonl"
    assert cli(fake, whole, "--page-size", "10").exit_code == 0

    out = tmp_path / "part.jsonl"
    waits: list[float] = []
    pages: list[int] = []

    def after_page(summary: object) -> None:
        pages.append(1)
        if len(pages) == 1:
            fake.fail_next(429, headers={"Retry-After": "30", "X-RateLimit-Reset": "1"}, path=r"/table/incident$")
            fake.fail_next(503, times=1, path=r"/sys_journal_field$")
        if len(pages) == 2:
            raise KeyboardInterrupt  # stopped inside the tied block

    try:
        import_in_process(fake, out, sleep=waits.append, on_page=after_page, page_size=10)
    except KeyboardInterrupt:
        pass
    assert waits[0] == 30.0 and 0 < waits[1] <= 1.0
    result = cli(fake, out, "--page-size", "10")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == whole.read_bytes()


def test_journal_access_denied_says_what_the_user_needs(
    sn_instance: Callable[..., HistoryServiceNow], tmp_path: Path
) -> None:
    fake = sn_instance(tickets=5)
    fake.fail_next(403, path=r"/sys_journal_field$", body={"error": {"message": "Operation Failed"}, "status": "x"})
    result = cli(fake, tmp_path / "d.jsonl")
    assert result.exit_code == 2
    assert "needs read access to sys_journal_field" in result.output
