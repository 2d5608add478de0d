"""Jira / JSM write-back against the fake Jira: fields, internal vs public comments, exactly once, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from service.connectors import make_writer
from service.connectors.jira import JiraWriter
from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream
from service.domain.render import marker_token
from service.domain.schemas import WriteBack
from service.settings import JiraSettings, Settings
from tests.fakes import FakeJira, FakeServer, Reply
from tests.fakes.fake_jira import FakeComment

MODES = ["servicedeskapi", "property"]


def writer(fake: FakeJira, **overrides: Any) -> JiraWriter:
    """A JiraWriter pointed at the fake with a short timeout."""
    return JiraWriter(JiraSettings(**fake.settings(timeout_s=0.3, **overrides)))


def triage(key: str = "d-1", issue: str = "10231", **kw: Any) -> WriteBack:
    """A triage write: priority + queue fields and an internal note."""
    values: dict[str, Any] = {
        "kind": "triage",
        "external_id": issue,
        "external_key": "ITSD-42",
        "idempotency_key": key,
        "fields": {"priority": "P2", "queue": "Network"},
        "note": "Looks like a VPN token problem.",
    }
    return WriteBack(**(values | kw))


def reply(key: str = "r-1", issue: str = "10231", **kw: Any) -> WriteBack:
    """An approved public reply."""
    values: dict[str, Any] = {
        "kind": "reply",
        "external_id": issue,
        "external_key": "ITSD-42",
        "idempotency_key": key,
        "public_reply": "Hi Dana, we reset your VPN token. Please reconnect.",
    }
    return WriteBack(**(values | kw))


def test_make_writer_builds_the_jira_writer_from_settings(fake_jira: FakeJira) -> None:
    w = make_writer("jira", Settings(jira=fake_jira.settings()))
    assert isinstance(w, JiraWriter) and w.source == "jira"
    with pytest.raises(ValueError, match="ITSM_JIRA__BASE_URL"):
        make_writer("jira", Settings())
    with pytest.raises(ValueError, match="no connector"):
        make_writer("zendesk", Settings())


def test_requests_carry_basic_auth_of_the_bot_account(fake_jira: FakeJira) -> None:
    writer(fake_jira).write(triage())
    expected = "Basic " + base64.b64encode(b"itsm-bot@acme.example:test-jira-api-token").decode()
    assert {r.headers["Authorization"] for r in fake_jira.requests} == {expected}
    assert all(r.headers["Accept"] == "application/json" for r in fake_jira.requests)


def test_triage_sets_priority_component_and_label_then_posts_one_internal_jsm_note(fake_jira: FakeJira) -> None:
    out = writer(fake_jira).write(triage())
    issue = fake_jira.issue("10231")
    assert issue.priority == {"id": "2", "name": "High"}
    assert issue.components == ["Network"] and issue.labels == ["ai-triaged"]
    assert out.written_fields == {"priority": "High", "queue": "Network"} and out.unmapped_fields == {}
    [put] = fake_jira.requests_to("PUT", r"/rest/api/3/issue/10231$")
    assert put.json() == {
        "fields": {"priority": {"name": "High"}, "components": [{"name": "Network"}]},
        "update": {"labels": [{"add": "ai-triaged"}]},
    }
    [post] = fake_jira.requests_to("POST")
    assert post.path == "/rest/servicedeskapi/request/10231/comment" and post.json()["public"] is False
    assert [c.public for c in issue.comments] == [False] and out.external_ref == issue.comments[0].id
    assert marker_token("d-1", "note") in issue.comments[0].plain


def test_property_route_posts_adf_with_the_internal_sd_public_comment_property(fake_jira: FakeJira) -> None:
    writer(fake_jira, internal_comments="property").write(triage())
    [post] = fake_jira.requests_to("POST")
    body = post.json()
    assert post.path == "/rest/api/3/issue/10231/comment"
    assert {"key": "sd.public.comment", "value": {"internal": True}} in body["properties"]
    assert body["body"]["type"] == "doc" and body["body"]["version"] == 1
    assert fake_jira.issue("10231").internal_comments() and not fake_jira.issue("10231").public_comments()


@pytest.mark.parametrize("mode", MODES)
def test_an_approved_reply_is_one_public_comment(fake_jira: FakeJira, mode: str) -> None:
    out = writer(fake_jira, internal_comments=mode).write(reply())
    issue = fake_jira.issue("10231")
    assert [c.public for c in issue.comments] == [True] and not out.already_done
    assert "we reset your VPN token" in issue.comments[0].plain
    assert fake_jira.requests_to("PUT") == []  # a reply changes no fields


@pytest.mark.parametrize(
    ("category_field", "expected_put"),
    [
        ("labels", {"update": {"labels": [{"add": "ai-triaged"}, {"add": "queue-network-infrastructure"}]}}),
        ("customfield_10050", {"fields": {"customfield_10050": {"value": "Network Infrastructure"}},
                               "update": {"labels": [{"add": "ai-triaged"}]}}),
    ],
)  # fmt: skip
def test_queue_goes_to_the_configured_category_field(
    fake_jira: FakeJira, category_field: str, expected_put: dict[str, Any]
) -> None:
    fake_jira.custom_field_options["customfield_10050"] = ["Network Infrastructure"]
    w = writer(fake_jira, category_field=category_field)
    w.write(triage(fields={"queue": "Network Infrastructure"}))
    [put] = fake_jira.requests_to("PUT")
    assert put.json() == expected_put


def test_unmapped_labels_are_suggested_in_the_note_and_never_written(fake_jira: FakeJira) -> None:
    w = writer(fake_jira, priority_map={"P2": "High"})
    out = w.write(triage(fields={"priority": "P1", "queue": "Network", "sentiment": "angry"}))
    assert out.unmapped_fields == {"priority": "P1", "sentiment": "angry"}
    [put] = fake_jira.requests_to("PUT")
    assert "priority" not in put.json()["fields"] and "sentiment" not in str(put.json())
    assert fake_jira.issue("10231").priority["name"] == "Medium"  # unchanged
    note = fake_jira.issue("10231").comments[0].plain
    assert "no mapping configured" in note and "priority = P1" in note and "sentiment = angry" in note


def test_unmapped_labels_alone_still_produce_an_internal_note(fake_jira: FakeJira) -> None:
    out = writer(fake_jira).write(triage(fields={"priority": "P9"}, note=None))
    assert out.unmapped_fields == {"priority": "P9"} and fake_jira.requests_to("PUT") == []
    [comment] = fake_jira.issue("10231").comments
    assert not comment.public and "priority = P9" in comment.plain


def test_a_refused_field_edit_still_posts_the_note_with_the_fields_as_suggestions(fake_jira: FakeJira) -> None:
    outcome = writer(fake_jira).write(triage(fields={"queue": "Nonexistent Team"}))
    assert outcome.written_fields == {} and outcome.unmapped_fields["queue"] == "Nonexistent Team"
    issue = fake_jira.issue("10231")
    assert issue.components == [] and issue.priority["name"] == "Medium"  # nothing half-written
    [note] = issue.internal_comments()
    assert "Nonexistent Team" in note.plain and "cannot be set" in note.plain
    again = writer(fake_jira).write(triage(fields={"queue": "Nonexistent Team"}, check_existing=True))
    assert again.already_done and len(issue.internal_comments()) == 1


def test_an_unknown_issue_is_permanent(fake_jira: FakeJira) -> None:
    with pytest.raises(PermanentUpstream, match="Issue does not exist"):
        writer(fake_jira).write(triage(issue="99999"))


def test_429_on_the_comment_is_transient_with_retry_after_and_the_retry_posts_once(fake_jira: FakeJira) -> None:
    fake_jira.fail_next(429, headers={"Retry-After": "7"}, method="POST")
    w = writer(fake_jira)
    with pytest.raises(TransientUpstream) as info:
        w.write(triage())
    assert info.value.retry_after_s == 7.0 and not isinstance(info.value, OutcomeUnknown)
    out = w.write(triage(check_existing=True))
    assert not out.already_done and len(fake_jira.issue("10231").comments) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make", [triage, reply], ids=["note", "reply"])
def test_lost_response_then_retry_leaves_exactly_one_comment(fake_jira: FakeJira, mode: str, make: Any) -> None:
    fake_jira.auto_create_issues = True
    w = writer(fake_jira, internal_comments=mode)
    runs = 20
    for i in range(runs):
        issue = str(30000 + i)
        fake_jira.drop_after_write_next(method="POST", path=r"/comment$")
        with pytest.raises(OutcomeUnknown):
            w.write(make(key=f"k-{i}", issue=issue))
        out = w.write(make(key=f"k-{i}", issue=issue, check_existing=True))
        again = w.write(make(key=f"k-{i}", issue=issue, check_existing=True))  # a duplicate message
        assert out.already_done and again.already_done and out.external_ref == again.external_ref
        assert len(fake_jira.issue(issue).comments) == 1
    assert len(fake_jira.requests_to("POST")) == runs  # never a second POST


@pytest.mark.parametrize("mode", MODES)
def test_timeout_before_the_write_applied_posts_on_retry_exactly_once(fake_jira: FakeJira, mode: str) -> None:
    fake_jira.hang_next(3.0, method="POST")
    w = writer(fake_jira, internal_comments=mode)
    with pytest.raises(OutcomeUnknown):
        w.write(triage())
    assert fake_jira.issue("10231").comments == []
    out = w.write(triage(check_existing=True))
    assert not out.already_done and len(fake_jira.issue("10231").comments) == 1


def test_slow_commit_whose_answer_times_out_is_found_by_the_marker(fake_jira: FakeJira) -> None:
    fake_jira.hang_next(3.0, apply=True, method="POST")
    w = writer(fake_jira)
    with pytest.raises(OutcomeUnknown):
        w.write(triage())
    assert w.write(triage(check_existing=True)).already_done
    assert len(fake_jira.issue("10231").comments) == 1


def test_note_and_reply_in_one_write_are_checked_separately(fake_jira: FakeJira) -> None:
    w = writer(fake_jira)
    both = triage(public_reply="We are on it.")
    fake_jira.fail_next(503, method="POST", path=r"/comment$")  # the note POST fails outright
    with pytest.raises(OutcomeUnknown):
        w.write(both)
    fake_jira.drop_after_write_next(method="POST")  # the note lands, its answer is lost
    with pytest.raises(OutcomeUnknown):
        w.write(both.model_copy(update={"check_existing": True}))
    out = w.write(both.model_copy(update={"check_existing": True}))
    issue = fake_jira.issue("10231")
    assert not out.already_done and sorted(c.public for c in issue.comments) == [False, True]


def test_marker_search_pages_through_many_comments(fake_jira: FakeJira) -> None:
    w = writer(fake_jira)
    issue = fake_jira.issue("10231")
    issue.comments += [FakeComment(str(i), True, "jsm", text=f"filler {i}") for i in range(250)]  # seeded directly
    w.write(triage(key="late"))
    before = len(fake_jira.requests)
    assert w.write(triage(key="late", check_existing=True)).already_done
    pages = fake_jira.requests_to("GET")[-3:]
    assert len(fake_jira.requests) - before == 3 and [p.param("start") for p in pages] == ["0", "100", "200"]


def test_fake_echoes_a_signed_comment_created_webhook_for_our_own_comment(fake_jira: FakeJira) -> None:
    receiver = FakeServer().start()
    receiver.route("POST", r"/webhooks/jira", lambda req, m: Reply(202, {"status": "ignored"}))
    try:
        statuses = fake_jira.echo_comments_to(receiver.url + "/webhooks/jira", secret="test-jira-webhook-secret")
        writer(fake_jira).write(triage())
        deadline = time.monotonic() + 10
        while not statuses and time.monotonic() < deadline:
            time.sleep(0.02)
        [hook] = receiver.requests
        expected = hmac.new(b"test-jira-webhook-secret", hook.body, hashlib.sha256).hexdigest()
        assert statuses == [202] and hook.headers["X-Hub-Signature"] == f"sha256={expected}"
        body = hook.json()
        assert body["webhookEvent"] == "comment_created" and body["comment"]["jsdPublic"] is False
        assert body["comment"]["author"]["accountId"] == "62f0a1b2c3d4e5f607182930"  # the bot: receivers drop it
    finally:
        receiver.stop()
