"""ServiceNow write-back against the fake instance: impact/urgency not priority, journals, exactly once, auth."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from service.connectors import make_writer
from service.connectors.servicenow import ServiceNowWriter
from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream
from service.domain.render import marker_token
from service.domain.schemas import WriteBack
from service.settings import ServiceNowSettings, Settings
from tests.conftest import fixture_bytes, fixture_headers
from tests.fakes import FakeServiceNow
from tests.fakes.fake_servicenow import SEED_SYS_ID


def fixture_json(name: str) -> Any:
    """A contract fixture, parsed."""
    return json.loads(fixture_bytes(name))


GROUP = "287ebd7da9fe198100f92cc8d1d2154e"


def writer(fake: FakeServiceNow, *, oauth: bool = False, **overrides: Any) -> ServiceNowWriter:
    """A ServiceNowWriter pointed at the fake with a short timeout and a queue -> group map."""
    group = fake.settings(oauth=oauth, timeout_s=0.3, assignment_group_map={"Network": GROUP}, **overrides)
    return ServiceNowWriter(ServiceNowSettings(**group))


def triage(key: str = "d-1", sys_id: str = SEED_SYS_ID, **kw: Any) -> WriteBack:
    """A triage write with priority, category and queue."""
    values: dict[str, Any] = {
        "kind": "triage",
        "external_id": sys_id,
        "external_key": "INC0010042",
        "idempotency_key": key,
        "fields": {"priority": "P2", "category": "NETWORK", "queue": "Network"},
        "note": "Looks like a VPN token problem.",
    }
    return WriteBack(**(values | kw))


def test_make_writer_builds_the_servicenow_writer(fake_servicenow: FakeServiceNow) -> None:
    w = make_writer("servicenow", Settings(servicenow=fake_servicenow.settings()))
    assert isinstance(w, ServiceNowWriter) and w.source == "servicenow"
    with pytest.raises(ValueError, match="INSTANCE_URL"):
        make_writer("servicenow", Settings())


def test_triage_is_one_patch_with_impact_urgency_category_group_and_work_note(fake_servicenow: FakeServiceNow) -> None:
    out = writer(fake_servicenow).write(triage())
    [patch] = fake_servicenow.requests_to("PATCH")
    body = patch.json()
    assert "priority" not in body  # ServiceNow computes it
    assert {k: body[k] for k in ("impact", "urgency", "category", "assignment_group")} == {
        "impact": "1", "urgency": "2", "category": "network", "assignment_group": GROUP,
    }  # fmt: skip
    assert "comments" not in body and marker_token("d-1", "note") in body["work_notes"]
    inc = fake_servicenow.incident(SEED_SYS_ID)
    assert inc.record["priority"] == "2" and inc.priority_writes == []  # derived from impact 1 x urgency 2
    assert len(inc.work_notes) == 1 and inc.comments == []
    assert out.external_ref == SEED_SYS_ID and out.unmapped_fields == {}
    assert out.written_fields["priority"] == "impact=1,urgency=2"


def test_category_map_value_can_carry_a_subcategory(fake_servicenow: FakeServiceNow) -> None:
    w = writer(fake_servicenow, category_map={"NETWORK": "network/vpn"})
    w.write(triage(fields={"category": "NETWORK"}))
    body = fake_servicenow.requests_to("PATCH")[0].json()
    assert body["category"] == "network" and body["subcategory"] == "vpn"


def test_unmapped_labels_go_to_the_note_and_are_not_written(fake_servicenow: FakeServiceNow) -> None:
    out = writer(fake_servicenow).write(triage(fields={"priority": "P7", "category": "BILLING_PURCHASE"}))
    body = fake_servicenow.requests_to("PATCH")[0].json()
    assert not {"impact", "urgency", "category", "priority"} & set(body)
    assert out.unmapped_fields == {"priority": "P7", "category": "BILLING_PURCHASE"}
    assert "category = BILLING_PURCHASE" in body["work_notes"] and "priority = P7" in body["work_notes"]


def test_an_approved_reply_goes_to_customer_visible_comments_only(fake_servicenow: FakeServiceNow) -> None:
    reply = triage(kind="reply", fields={}, note=None, public_reply="Please reconnect now.")
    writer(fake_servicenow).write(reply)
    body = fake_servicenow.requests_to("PATCH")[0].json()
    assert set(body) == {"comments"} and "Please reconnect now." in body["comments"]
    assert fake_servicenow.incident(SEED_SYS_ID).work_notes == []


def test_basic_auth_is_the_integration_user(fake_servicenow: FakeServiceNow) -> None:
    writer(fake_servicenow).write(triage())
    expected = "Basic " + base64.b64encode(b"itsm.triage.bot:test-sn-password").decode()
    assert {r.headers["Authorization"] for r in fake_servicenow.requests} == {expected}


def test_oauth_fetches_a_token_once_and_refreshes_it_after_a_401(fake_servicenow: FakeServiceNow) -> None:
    w = writer(fake_servicenow, oauth=True)
    w.write(triage(key="a"))
    w.write(triage(key="b"))
    token_calls = fake_servicenow.requests_to("POST", r"/oauth_token\.do$")
    assert len(token_calls) == 1
    assert token_calls[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in fake_servicenow.requests_to("PATCH"))
    fake_servicenow.expire_tokens()
    w.write(triage(key="c"))
    assert len(fake_servicenow.requests_to("POST", r"/oauth_token\.do$")) == 2
    assert [r.status for r in fake_servicenow.requests_to("PATCH")] == [200, 200, 401, 200]
    assert len(fake_servicenow.incident(SEED_SYS_ID).work_notes) == 3


def test_a_rejected_oauth_client_is_permanent(fake_servicenow: FakeServiceNow) -> None:
    w = writer(fake_servicenow, oauth=True, oauth_client_secret="wrong")
    with pytest.raises(PermanentUpstream) as info:
        w.write(triage())
    assert info.value.status == 401 and fake_servicenow.requests_to("PATCH") == []


def test_429_carries_servicenows_retry_after(fake_servicenow: FakeServiceNow) -> None:
    fake_servicenow.fail_next(429, headers=fixture_headers("servicenow_error_429.headers.json"))
    with pytest.raises(TransientUpstream) as info:
        writer(fake_servicenow).write(triage())
    assert info.value.status == 429 and info.value.retry_after_s == 1834.0


def test_acl_failure_is_permanent_with_the_detail(fake_servicenow: FakeServiceNow) -> None:
    body = fixture_json("servicenow_error_403_acl.json")
    fake_servicenow.fail_next(403, body=body)
    with pytest.raises(PermanentUpstream, match="ACL Exception Update Failed") as info:
        writer(fake_servicenow).write(triage())
    assert info.value.status == 403


def test_unknown_incident_is_permanent(fake_servicenow: FakeServiceNow) -> None:
    with pytest.raises(PermanentUpstream, match="No Record found"):
        writer(fake_servicenow).write(triage(sys_id="0" * 32))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_on_a_journal_patch_is_outcome_unknown(fake_servicenow: FakeServiceNow, status: int) -> None:
    fake_servicenow.fail_next(status)
    with pytest.raises(OutcomeUnknown):
        writer(fake_servicenow).write(triage())


@pytest.mark.parametrize("part", ["note", "reply"])
def test_lost_response_then_retry_leaves_exactly_one_journal_entry(fake_servicenow: FakeServiceNow, part: str) -> None:
    fake_servicenow.auto_create_incidents = True
    w = writer(fake_servicenow)
    runs = 20
    for i in range(runs):
        sys_id = f"{i:032x}"
        write = triage(key=f"k-{i}", sys_id=sys_id)
        if part == "reply":
            write = write.model_copy(update={"kind": "reply", "fields": {}, "note": None, "public_reply": "Done."})
        fake_servicenow.drop_after_write_next(method="PATCH")
        with pytest.raises(OutcomeUnknown):
            w.write(write)
        retry = write.model_copy(update={"check_existing": True})
        assert w.write(retry).already_done and w.write(retry).already_done
        inc = fake_servicenow.incident(sys_id)
        assert len(inc.work_notes if part == "note" else inc.comments) == 1
    assert len(fake_servicenow.requests_to("PATCH")) == runs


def test_timeout_before_the_patch_applied_writes_on_retry(fake_servicenow: FakeServiceNow) -> None:
    fake_servicenow.hang_next(3.0, method="PATCH")
    w = writer(fake_servicenow)
    with pytest.raises(OutcomeUnknown, match="ReadTimeout"):
        w.write(triage())
    out = w.write(triage(check_existing=True))
    inc = fake_servicenow.incident(SEED_SYS_ID)
    assert not out.already_done and len(inc.work_notes) == 1 and inc.record["impact"] == "1"


def test_fields_only_patch_is_idempotent_so_a_timeout_is_plain_transient(fake_servicenow: FakeServiceNow) -> None:
    fake_servicenow.hang_next(3.0, method="PATCH")
    with pytest.raises(TransientUpstream) as info:
        writer(fake_servicenow).write(triage(kind="correction", fields={"priority": "P4"}, note=None))
    assert type(info.value) is TransientUpstream


def test_marker_is_found_in_sys_journal_field_when_display_values_hide_journals(
    fake_servicenow: FakeServiceNow,
) -> None:
    fake_servicenow.journal_in_display_value = False  # an instance whose display value omits journal text
    w = writer(fake_servicenow)
    fake_servicenow.drop_after_write_next(method="PATCH")
    with pytest.raises(OutcomeUnknown):
        w.write(triage())
    assert w.write(triage(check_existing=True)).already_done
    assert len(fake_servicenow.incident(SEED_SYS_ID).work_notes) == 1
    [look] = fake_servicenow.requests_to("GET", r"/sys_journal_field$")
    assert look.param("sysparm_query") == (
        f"element_id={SEED_SYS_ID}^elementINwork_notes,comments^valueLIKE{marker_token('d-1', 'note')}"
    )


def test_no_acl_on_the_journal_table_falls_back_to_the_display_value_answer(fake_servicenow: FakeServiceNow) -> None:
    fake_servicenow.fail_next(
        403, method="GET", path=r"/sys_journal_field$", body=fixture_json("servicenow_error_403_acl.json")
    )
    out = writer(fake_servicenow).write(triage(check_existing=True))  # nothing written yet: it must write now
    assert not out.already_done and len(fake_servicenow.incident(SEED_SYS_ID).work_notes) == 1


def test_a_wrong_basic_password_is_permanent_with_servicenows_reason(fake_servicenow: FakeServiceNow) -> None:
    with pytest.raises(PermanentUpstream, match="User Not Authenticated") as info:
        writer(fake_servicenow, password="wrong").write(triage())
    assert info.value.status == 401 and fake_servicenow.incident(SEED_SYS_ID).work_notes == []
