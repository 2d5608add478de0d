"""Error classification and Retry-After parsing of the shared HTTP layer, over real sockets to a fake server."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from service.connectors._http import HttpCaller, retry_after_seconds
from service.connectors.jira import jira_error_message
from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream
from tests.fakes import FakeJira

NOW = datetime(2026, 7, 14, 9, 15, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "17"}, 17.0),
        ({"retry-after": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": format_datetime(datetime(2026, 7, 14, 9, 16, 30, tzinfo=UTC), usegmt=True)}, 90.0),
        ({"Retry-After": "Tue, 14 Jul 2026 09:14:00 GMT"}, 0.0),  # a date in the past: retry now, never negative
        ({"X-RateLimit-Reset": "2026-07-14T09:16Z"}, 60.0),  # Jira: ISO-8601 to the minute
        ({"X-RateLimit-Reset": str(int(NOW) + 1834)}, 1834.0),  # ServiceNow: UNIX epoch seconds
        ({"Retry-After": "17", "X-RateLimit-Reset": "2026-07-14T10:00Z"}, 17.0),  # Retry-After wins
        ({"Retry-After": "soon", "X-RateLimit-Reset": "2026-07-14T09:16Z"}, 60.0),  # unparsable falls through
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_parses_seconds_dates_iso_and_epoch(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


def _caller(url: str, *, timeout_s: float = 0.5, creds: tuple[str, str] | None = None) -> HttpCaller:
    fake_creds = creds or ("itsm-bot@acme.example", "test-jira-api-token")
    return HttpCaller(
        system="jira", base_url=url, auth=fake_creds, timeout_s=timeout_s, error_message=jira_error_message
    )


ISSUE = "/rest/api/3/issue/10231"
COMMENT = ISSUE + "/comment"
BODY = {"body": {"type": "doc", "version": 1, "content": []}}


def test_429_is_transient_with_the_servers_retry_after(fake_jira: FakeJira) -> None:
    fake_jira.fail_next(429, headers={"Retry-After": "7", "RateLimit-Reason": "jira-per-issue-on-write"})
    with pytest.raises(TransientUpstream) as info:
        _caller(fake_jira.url).request("PUT", ISSUE, idempotent=True, json={"fields": {}})
    assert type(info.value) is TransientUpstream
    assert info.value.status == 429 and info.value.retry_after_s == 7.0
    assert "Rate limit exceeded" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_an_idempotent_call_is_plain_transient(fake_jira: FakeJira, status: int) -> None:
    fake_jira.fail_next(status)
    with pytest.raises(TransientUpstream) as info:
        _caller(fake_jira.url).request("PUT", ISSUE, idempotent=True, json={"fields": {}})
    assert type(info.value) is TransientUpstream and info.value.status == status


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_on_a_post_may_have_been_applied_so_it_is_outcome_unknown(fake_jira: FakeJira, status: int) -> None:
    fake_jira.fail_next(status, headers={"Retry-After": "3"})
    with pytest.raises(OutcomeUnknown) as info:
        _caller(fake_jira.url).request("POST", COMMENT, idempotent=False, json=BODY)
    assert info.value.status == status and info.value.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "components: Field 'components' cannot be set"), (404, "Issue does not exist"), (413, "too many")],
)
def test_other_4xx_are_permanent_with_the_upstream_message(fake_jira: FakeJira, status: int, message: str) -> None:
    body = {
        400: {"errorMessages": [], "errors": {"components": "Field 'components' cannot be set. It is not on..."}},
        404: {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}},
        413: {"errorMessages": ["The issue has too many comments."], "errors": {}},
    }[status]
    fake_jira.fail_next(status, body=body)
    with pytest.raises(PermanentUpstream) as info:
        _caller(fake_jira.url).request("POST", COMMENT, idempotent=False, json=BODY)
    assert info.value.status == status and message in str(info.value)


def test_bad_credentials_are_permanent(fake_jira: FakeJira) -> None:
    with pytest.raises(PermanentUpstream) as info:
        _caller(fake_jira.url, creds=("itsm-bot@acme.example", "wrong")).request("GET", ISSUE, idempotent=True)
    assert info.value.status == 401 and "not authenticated" in str(info.value)


def test_connection_refused_is_transient_not_unknown() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientUpstream) as info:
        _caller(f"http://127.0.0.1:{port}").request("POST", COMMENT, idempotent=False, json=BODY)
    assert type(info.value) is TransientUpstream and "cannot connect" in str(info.value)


def test_read_timeout_on_a_post_is_outcome_unknown(fake_jira: FakeJira) -> None:
    fake_jira.hang_next(5.0, method="POST")
    with pytest.raises(OutcomeUnknown, match="ReadTimeout"):
        _caller(fake_jira.url, timeout_s=0.3).request("POST", COMMENT, idempotent=False, json=BODY)
    assert fake_jira.issue("10231").comments == []  # the hang did not apply it: unknown, not failed


def test_read_timeout_on_an_idempotent_call_is_plain_transient(fake_jira: FakeJira) -> None:
    fake_jira.hang_next(5.0, method="PUT")
    with pytest.raises(TransientUpstream) as info:
        _caller(fake_jira.url, timeout_s=0.3).request("PUT", ISSUE, idempotent=True, json={"fields": {}})
    assert type(info.value) is TransientUpstream


def test_connection_dropped_after_the_write_is_outcome_unknown(fake_jira: FakeJira) -> None:
    fake_jira.drop_after_write_next(method="POST")
    with pytest.raises(OutcomeUnknown, match="RemoteProtocolError"):
        _caller(fake_jira.url).request("POST", COMMENT, idempotent=False, json=BODY)
    assert len(fake_jira.issue("10231").comments) == 1  # the write happened; only the answer was lost
    assert fake_jira.requests_to("POST")[-1].status is None


def test_faults_are_consumed_in_order_and_only_for_matching_requests(fake_jira: FakeJira) -> None:
    fake_jira.fail_next(503, times=2, method="POST")
    caller = _caller(fake_jira.url)
    caller.request("GET", ISSUE, idempotent=True)  # GET does not match the POST fault
    for _ in range(2):
        with pytest.raises(OutcomeUnknown):
            caller.request("POST", COMMENT, idempotent=False, json=BODY)
    assert caller.request("POST", COMMENT, idempotent=False, json=BODY).status_code == 201
    assert [r.status for r in fake_jira.requests] == [200, 503, 503, 201]


@pytest.mark.parametrize("status", [408, 409, 425])
def test_retryable_4xx_are_transient(fake_jira: FakeJira, status: int) -> None:
    fake_jira.fail_next(status, body={"errorMessages": ["conflicting update"], "errors": {}})
    with pytest.raises(TransientUpstream) as info:
        _caller(fake_jira.url).request("PUT", ISSUE, idempotent=True, json={"fields": {}})
    assert type(info.value) is TransientUpstream and info.value.status == status
