"""`itsm-triage history import --source jira` against a fake Jira Cloud / JSM site with a ticket history."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from pathlib import Path

from service.domain.sanitize import scrub
from service.webhooks.markup import to_text
from tests.fakes.history_corpus import PastComment, PastTicket
from tests.fakes.history_jira import AUTOMATION, HistoryJira
from tests.history.conftest import cli, import_in_process, rows

NOISE = (
    "Any update on this?",
    "Checked the logs",
    "AI triage (internal)",
    "we received your request",
    "waiting for support",
    "Thanks, that fixed it.",
)


def expected_rows(history: Iterable[PastTicket]) -> list[PastTicket]:
    """The tickets the import must write: not closed as duplicates, not re-filed text."""
    out, texts = [], set()
    for t in history:
        text = (t.subject.removeprefix("Re: ").lower(), " ".join(t.body.split()).lower())
        if t.resolution == "Duplicate" or text in texts:
            continue
        texts.add(text)
        out.append(t)
    return out


def test_jira_import_pages_with_tokens_and_writes_labels_and_first_agent_replies(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=120, page_cap=7)
    out = tmp_path / "jira.jsonl"
    result = cli(fake, out)
    assert result.exit_code == 0, result.output

    searches = fake.requests_to("POST", r"/search/jql$")
    assert len(searches) == math.ceil(120 / 7)
    first = searches[0].json()
    assert first["jql"] == "(statusCategory = Done) AND resolved >= -365d ORDER BY resolved ASC, key ASC"
    assert {"summary", "description", "priority", "components", "resolutiondate", "customfield_10010"} <= set(
        first["fields"]
    )
    assert "nextPageToken" not in first
    assert all(s.json()["nextPageToken"] == p.response["nextPageToken"] for p, s in itertools.pairwise(searches))

    got = rows(out)
    want = expected_rows(fake.history)
    assert [r["id"] for r in got] == [f"jira:{t.key}" for t in want]
    for r, t in zip(got, want, strict=True):
        assert (r["queue"], r["priority"]) == (t.queue, t.priority)  # Medium -> P3 through the priority map
        assert r["body"] == scrub(t.body).text and r["subject"] == scrub(t.subject).text
        assert r["reply"] == (scrub(to_text(t.reply)).text if t.reply else None), t.key
        assert not any(noise in (r["reply"] or "") for noise in NOISE)
        assert list(r) == ["id", "subject", "body", "queue", "priority", "reply", "language"]
    assert {r["language"] for r in got} >= {"en", "de"}
    skipped = len(fake.history) - len(want)
    assert f"read 120 · written {len(want)} · skipped {skipped}" in result.output
    assert "closed_as_duplicate 1" in result.output and "refiling 1" in result.output
    assert "label priority (from priority): 3 values" in result.output


def test_internal_reporter_automation_and_own_comments_are_never_the_reply(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=0)
    noise_only = fake.history.add(
        subject="Printer offline",
        body="The 3rd floor printer shows offline.",
        comments=(
            PastComment("agent", False, "Internal: the print server was rebooted."),
            PastComment("bot", True, "We received your request.\nitsm-ref:0123456789abcdef0123"),
            PastComment("system", True, "Your request status changed to Waiting for support."),
            PastComment("reporter", True, "Hello? Anyone?"),
        ),
    )
    public_after_internal = fake.history.add(
        subject="Mailbox full",
        body="My mailbox says it is full.",
        comments=(
            PastComment("reporter", True, "It is urgent."),
            PastComment("agent", False, "Quota is 2 GB; raising it to 4 GB."),
            PastComment("agent", True, "We raised your mailbox quota to 4 GB."),
        ),
    )
    marker_from_agent_account = fake.history.add(
        subject="VPN drops",
        body="VPN disconnects every hour.",
        comments=(
            PastComment("agent", True, "Suggested reply approved.\nitsm-ref:aaaaaaaaaaaaaaaaaaaa"),
            PastComment("agent", True, "Please update the client to 6.2."),
        ),
    )
    out = tmp_path / "replies.jsonl"
    result = cli(fake, out)
    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id[f"jira:{noise_only.key}"]["reply"] is None
    assert by_id[f"jira:{public_after_internal.key}"]["reply"] == "We raised your mailbox quota to 4 GB."
    assert by_id[f"jira:{marker_from_agent_account.key}"]["reply"] == "Please update the client to 6.2."
    # JSM comment authors carry no accountType: the automation account was looked up once and skipped.
    lookups = [r.param("accountId") for r in fake.requests_to("GET", r"/rest/api/3/user$")]
    assert lookups.count(AUTOMATION["accountId"]) == 1
    # Only public comments were asked for.
    assert {r.param("internal") for r in fake.requests_to("GET", r"/servicedeskapi/request/.*/comment$")} == {"false"}


def test_skip_author_and_platform_comments_of_a_project_that_is_not_a_service_desk(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=0)
    fake.platform_projects = {"OPS"}
    ops = fake.history.add(
        project="OPS",
        subject="Disk full on build agent",
        body="/var is at 100 %.",
        comments=(
            PastComment("agent", False, "Cleaning the docker cache."),
            PastComment("system", True, "Automation: linked to INC-12."),
            PastComment("agent", True, "Freed 40 GB; builds run again."),
        ),
    )
    sd = fake.history.add(
        subject="New laptop",
        body="Please order a laptop for our new hire.",
        comments=(PastComment("agent", True, "Ordered, arriving Monday."),),
    )
    out = tmp_path / "ops.jsonl"
    result = cli(fake, out, "--skip-author", "Alex Agent")
    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id[f"jira:{sd.key}"]["reply"] is None  # its only public comment is by the skipped author
    assert by_id[f"jira:{ops.key}"]["reply"] is None  # the platform path skips internal, app and skipped authors
    assert fake.requests_to("GET", rf"/rest/api/3/issue/{ops.key}/comment$")

    out2 = tmp_path / "ops2.jsonl"
    assert cli(fake, out2).exit_code == 0
    assert {r["id"]: r["reply"] for r in rows(out2)}[f"jira:{ops.key}"] == "Freed 40 GB; builds run again."


def test_an_issue_deleted_between_search_and_comments_costs_its_reply_only(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=12)
    fake.deleted = {"SD-3"}
    out = tmp_path / "d.jsonl"
    result = cli(fake, out)
    assert result.exit_code == 0, result.output
    by_id = {r["id"]: r for r in rows(out)}
    assert by_id["jira:SD-3"]["reply"] is None and len(by_id) == 12
    after = [fake.history[n] for n in range(3, 12)]
    assert [by_id[f"jira:{t.key}"]["reply"] for t in after] == [
        scrub(to_text(t.reply)).text if t.reply else None for t in after
    ]
    assert fake.requests_to("GET", r"/servicedeskapi/request/SD-12/comment$")  # still a service desk project


def test_a_rate_limit_mid_import_is_waited_out_and_server_errors_retried(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=40, page_cap=10)
    waits: list[float] = []
    pages: list[int] = []

    def after_page(summary: object) -> None:
        pages.append(1)
        if len(pages) == 2:  # the third search page is rate limited, then two comment reads fail
            fake.fail_next(429, headers={"Retry-After": "7"}, path=r"/search/jql$")
            fake.fail_next(503, times=2, path=r"/comment$")

    result = import_in_process(fake, tmp_path / "limited.jsonl", sleep=waits.append, on_page=after_page)
    assert result.complete and result.summary.read == 40
    assert waits[0] == 7.0  # Retry-After honoured exactly (backoff alone would be about a second)
    assert len(waits) == 3 and all(0 < w <= 2 for w in waits[1:])
    searches = fake.requests_to("POST", r"/search/jql$")
    limited = [i for i, r in enumerate(searches) if r.status == 429]
    assert len(limited) == 1
    i = limited[0]
    assert searches[i + 1].json()["nextPageToken"] == searches[i].json()["nextPageToken"]  # the same page again
    assert len(rows(tmp_path / "limited.jsonl")) == result.summary.written


def test_an_interrupted_import_resumes_from_its_checkpoint_and_writes_the_same_file(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=60, page_cap=8)
    whole = tmp_path / "whole.jsonl"
    assert cli(fake, whole).exit_code == 0

    out = tmp_path / "resumed.jsonl"
    pages: list[int] = []

    def stop_after_three(summary: object) -> None:
        pages.append(1)
        if len(pages) == 3:
            raise KeyboardInterrupt

    try:
        import_in_process(fake, out, on_page=stop_after_three)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    with out.open("a", encoding="utf-8") as f:  # the process died while writing the next page
        f.write('{"id": "jira:SD-25", "subject": "half a li')
    before = len(fake.requests_to("POST", r"/search/jql$"))

    result = cli(fake, out)
    assert result.exit_code == 0, result.output
    assert "continuing the stopped import" in result.output and "24 tickets written so far" in result.output
    assert out.read_bytes() == whole.read_bytes()
    resumed = fake.requests_to("POST", r"/search/jql$")[before:]
    assert len(resumed) == math.ceil(60 / 8) - 3 and "nextPageToken" in resumed[0].json()
    assert "read 60 · written" in result.output

    again = cli(fake, out)  # a finished import run again: asks for newer tickets only, writes nothing twice
    assert again.exit_code == 0 and "continuing the complete import" in again.output
    assert out.read_bytes() == whole.read_bytes()


def test_limit_stops_mid_page_and_an_expired_token_restarts_from_the_last_resolution_date(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=50, page_cap=7)
    whole = tmp_path / "whole.jsonl"
    assert cli(fake, whole).exit_code == 0
    out = tmp_path / "limited.jsonl"
    first = cli(fake, out, "--limit", "17")
    assert first.exit_code == 0 and "stopped at --limit 17" in first.output
    assert len(rows(out)) == 17
    fake.expire_page_tokens()
    rest = cli(fake, out)
    assert rest.exit_code == 0, rest.output
    assert out.read_bytes() == whole.read_bytes()
    restarted = [r.json()["jql"] for r in fake.requests_to("POST", r"/search/jql$") if r.status == 200][-1]
    assert 'AND resolved >= "' in restarted  # searched again from the last resolution date
