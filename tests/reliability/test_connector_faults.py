"""Connector faults through the real worker against the fake Jira (RELIABILITY T16, T17, T18, T19).

The fake is a real HTTP server with queued faults; the worker's real connector, outbox and retry state machine
handle them. Invariant: exactly one comment per ticket, never a request before Retry-After.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.samples import make_delivery
from tests.conftest import FIXTURES
from tests.fakes.fake_jira import FakeComment, FakeIssue
from tests.reliability.harness import (
    BOT_ACCOUNT_ID,
    JIRA_SECRET,
    Stack,
    comment_counts,
    jira_issue_id,
    jira_ticket,
    post,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONNECTOR_ENV = {
    "ITSM_WORKER__SWEEP_INTERVAL_S": "2",
    "ITSM_WORKER__STUCK_GRACE_S": "4",
    "ITSM_WORKER__LEASE_S": "20",
    "ITSM_WORKER__DELIVERY_BACKOFF_BASE_S": "0.5",
    "ITSM_WORKER__DELIVERY_BACKOFF_CAP_S": "1",  # shrunk cap: Retry-After must still win over it
    "ITSM_WORKER__DELIVERY_MAX_RETRIES": "4",
    "ITSM_JIRA__TIMEOUT_S": "1.5",
    "ITSM_MODEL__BATCH_WAIT_MS": "0",
}
ECHO_STATUSES: list[int] = []  # answers the receiver gave to the fake's webhook echoes (T19)


@pytest.fixture(scope="module")
def conn_stack() -> Iterator[Stack]:
    """Private servers, fake Jira, API, one triage+deliver worker and the beat sweeper."""
    from tests.reliability.conftest import _skip_without_servers

    _skip_without_servers()
    with Stack(env=CONNECTOR_ENV) as st:
        st.api()
        st.worker()
        st.sweeper()
        yield st


def _comment_posts(st: Stack, issue: str) -> list[Any]:
    """POSTs of a comment for one issue (platform or JSM API), as the fake recorded them."""
    return [
        r for r in st.jira.requests if r.method == "POST" and r.path.endswith("/comment") and f"/{issue}/" in r.path
    ]


def _gaps(posts: list[Any]) -> list[float]:
    """Seconds between consecutive requests."""
    return [b.at - a.at for a, b in itertools.pairwise(posts)]


def _send(st: Stack, n: int) -> str:
    issue = jira_issue_id(n)
    st.jira.add_issue(f"ITSD-{100000 + n}", issue)
    assert post(httpx.Client(), st.url, jira_ticket(n, delivery_id=f"c-{n}")).status_code == 202
    return issue


def _delivery_status(st: Stack, issue: str) -> list[tuple[str, int]]:
    assert st.ledger is not None
    return [
        (r[0], int(r[1]))
        for r in st.ledger.rows(
            "SELECT d.status, d.attempts FROM delivery d JOIN ticket t ON t.id = d.ticket_id WHERE t.external_id = :i",
            i=issue,
        )
    ]


def test_t16_retry_after_is_honoured_even_above_the_backoff_cap(conn_stack: Stack) -> None:
    """429 + Retry-After: 3 on the first two comment POSTs: no request before 3 s, then exactly one comment."""
    st = conn_stack
    n = 16001
    issue = jira_issue_id(n)
    st.jira.fail_next(429, times=2, method="POST", path=f"/{issue}/comment$", headers={"Retry-After": "3"})
    _send(st, n)
    assert wait_until(lambda: comment_counts(st.jira, [issue])[issue] >= 1, timeout_s=60), st.logs()
    posts = _comment_posts(st, issue)
    gaps = _gaps(posts)
    print(f"T16 attempts={len(posts)} gaps={[round(g, 2) for g in gaps]}")
    assert [p.status for p in posts] == [429, 429, 201]
    assert all(g >= 3.0 for g in gaps)  # never earlier than Retry-After
    assert comment_counts(st.jira, [issue])[issue] == 1


def test_t17_5xx_then_success_retries_with_backoff_and_writes_once(conn_stack: Stack) -> None:
    """500, 502, 503 then success: four attempts, one comment."""
    st = conn_stack
    n = 17001
    issue = jira_issue_id(n)
    for status in (500, 502, 503):
        st.jira.fail_next(status, method="POST", path=f"/{issue}/comment$")
    _send(st, n)
    assert wait_until(lambda: comment_counts(st.jira, [issue])[issue] >= 1, timeout_s=60), st.logs()
    posts = _comment_posts(st, issue)
    print(f"T17 statuses={[p.status for p in posts]} gaps={[round(g, 2) for g in _gaps(posts)]}")
    assert [p.status for p in posts][-1] == 201 and comment_counts(st.jira, [issue])[issue] == 1


def test_t17_timeouts_leave_the_write_unknown_then_look_before_posting_again(conn_stack: Stack) -> None:
    """The fake applies the comment but answers only after the client timeout: one comment, not two."""
    st = conn_stack
    n = 17002
    issue = jira_issue_id(n)
    st.jira.hang_next(4.0, apply=True, method="POST", path=f"/{issue}/comment$")
    _send(st, n)
    assert wait_until(lambda: [s for s, _ in _delivery_status(st, issue)] == ["sent"], timeout_s=60), (
        _delivery_status(st, issue),
        st.logs(),
    )
    time.sleep(1)
    assert comment_counts(st.jira, [issue])[issue] == 1


def test_t17_persistent_5xx_dead_letters_after_max_retries(conn_stack: Stack) -> None:
    """503 forever: the outbox row ends `dead` (visible DLQ) after max_retries, and nothing was written."""
    st = conn_stack
    n = 17003
    issue = jira_issue_id(n)
    st.jira.fail_next(503, times=50, method="POST", path=f"/{issue}/comment$")
    _send(st, n)
    assert wait_until(lambda: any(s == "dead" for s, _ in _delivery_status(st, issue)), timeout_s=90), (
        _delivery_status(st, issue),
        st.logs(),
    )
    posts = _comment_posts(st, issue)
    print(f"T17 DLQ after {len(posts)} attempts: {_delivery_status(st, issue)}")
    assert comment_counts(st.jira, [issue])[issue] == 0
    assert len(posts) <= 1 + 4  # first try + delivery_max_retries


def test_t18_lost_response_after_commit_never_posts_twice(conn_stack: Stack) -> None:
    """The fake creates the comment then drops the connection: status unknown, lookup, SENT, one comment."""
    st = conn_stack
    issues = []
    for run in range(5):
        n = 18000 + run
        issue = jira_issue_id(n)
        st.jira.drop_after_write_next(method="POST", path=f"/{issue}/comment$")
        _send(st, n)
        issues.append(issue)
    assert wait_until(
        lambda: (
            all(s == "sent" for i in issues for s, _ in _delivery_status(st, i))
            and all(_delivery_status(st, i) for i in issues)
        ),
        timeout_s=90,
    ), ({i: _delivery_status(st, i) for i in issues}, st.logs())
    time.sleep(1)
    counts = comment_counts(st.jira, issues)
    posts = {i: len(_comment_posts(st, i)) for i in issues}
    print(f"T18 comments per issue={counts} comment POSTs per issue={posts}")
    assert counts == dict.fromkeys(issues, 1)
    assert posts == dict.fromkeys(issues, 1)  # looked up, never re-posted


def _echo(st: Stack, issue: FakeIssue, comment: FakeComment) -> None:
    """What Jira does after our write: fire comment_created (authored by the bot) back to the receiver."""
    payload = json.loads((FIXTURES / "jira_comment_created_internal_by_bot.json").read_text())
    payload = copy.deepcopy(payload)
    payload["issue"]["id"], payload["issue"]["key"] = issue.id, issue.key
    payload["comment"]["id"] = comment.id
    payload["comment"]["author"]["accountId"] = BOT_ACCOUNT_ID
    payload["comment"]["body"] = comment.plain
    payload["timestamp"] = int(time.time() * 1000)
    d = make_delivery(payload, secret=JIRA_SECRET, delivery_id=f"echo-{comment.id}")
    ECHO_STATUSES.append(post(httpx.Client(), st.url, d).status_code)


def test_t19_echo_of_our_own_comment_triggers_no_new_draft(conn_stack: Stack) -> None:
    """The fake Jira fires comment_created for every comment we post; the receiver ignores its own echoes."""
    st = conn_stack
    ECHO_STATUSES.clear()
    st.jira.on_comment = lambda issue, comment: threading.Thread(target=_echo, args=(st, issue, comment)).start()
    try:
        issues = [_send(st, 19000 + run) for run in range(3)]
        assert wait_until(lambda: all(c >= 1 for c in comment_counts(st.jira, issues).values()), timeout_s=60)
        assert wait_until(lambda: len(ECHO_STATUSES) >= 3, timeout_s=20)
        time.sleep(3)  # an echo that slipped through would be triaged and written by now
    finally:
        st.jira.on_comment = None
    assert st.ledger is not None
    rows = st.ledger.rows(
        "SELECT t.external_id, count(DISTINCT g.id), count(DISTINCT s.id) FROM ticket t"
        " LEFT JOIN triage g ON g.ticket_id = t.id LEFT JOIN suggestion s ON s.ticket_id = t.id"
        " WHERE t.external_id = ANY(:ids) GROUP BY t.external_id",
        ids=issues,
    )
    echoes = st.ledger.rows("SELECT status, ignored_reason FROM inbound_event WHERE delivery_id LIKE 'echo-%'")
    print(f"T19 echo answers={ECHO_STATUSES} echo rows={echoes}")
    assert all(200 <= s < 300 for s in ECHO_STATUSES)
    assert {r[1] for r in rows} == {1} and all(r[2] <= 1 for r in rows)
    assert comment_counts(st.jira, issues) == dict.fromkeys(issues, 1)
    assert all(status == "ignored" for status, _ in echoes)
