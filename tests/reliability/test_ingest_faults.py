"""Webhook edge under faults, against the real API process on private servers (RELIABILITY T3-T5, T14, T15,
T21, T22 and bad inputs 16-18). Invariants: no 2xx without a commit, no duplicate side effect, never a 500."""

from __future__ import annotations

import copy
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.samples import as_new_ticket, load_sample, make_delivery, sign_jira
from service.webhooks.servicenow import sign as sign_servicenow
from tests.reliability.harness import (
    JIRA_SECRET,
    SN_SECRET,
    Stack,
    comment_counts,
    jira_issue_id,
    jira_ticket,
    post,
    proc_stat,
    servicenow_ticket,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_t3_duplicate_deliveries_create_one_ticket_one_triage_one_comment(stack: Stack) -> None:
    """40 deliveries sent 5x each, 20 concurrently: one of everything per delivery."""
    base = 3000
    deliveries = [jira_ticket(base + n, delivery_id=f"t3-{n}") for n in range(40)]
    with httpx.Client() as client, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda d: post(client, stack.url, d).status_code, deliveries * 5))
    assert set(statuses) <= {200, 202}, statuses
    assert statuses.count(202) == 40  # exactly one "stored" answer per delivery id
    ids = [jira_issue_id(base + n) for n in range(40)]
    assert wait_until(lambda: sum(comment_counts(stack.jira, ids).values()) >= 40, timeout_s=90), stack.logs()
    time.sleep(1.0)  # let any duplicate that is still in flight land before counting
    assert comment_counts(stack.jira, ids) == dict.fromkeys(ids, 1)
    assert stack.ledger is not None
    rows = stack.ledger.rows(
        "SELECT t.external_id, count(DISTINCT e.id), count(DISTINCT g.id), count(DISTINCT s.id), count(DISTINCT d.id)"
        " FROM ticket t JOIN inbound_event e ON e.ticket_id = t.id LEFT JOIN triage g ON g.ticket_id = t.id"
        " LEFT JOIN suggestion s ON s.ticket_id = t.id LEFT JOIN delivery d ON d.ticket_id = t.id"
        " WHERE t.external_id = ANY(:ids) GROUP BY t.external_id",
        ids=ids,
    )
    assert len(rows) == 40
    for _ext, events, triages, suggestions, outbox in rows:
        assert (events, triages, outbox) == (1, 1, 1) and suggestions <= 1


def test_t4_same_event_under_a_new_delivery_id_makes_no_second_draft(stack: Stack) -> None:
    """GitHub-style redelivery / ServiceNow resend: same payload, new id -> business-key dedup."""
    payload = as_new_ticket(load_sample("jira_issue_created"), 4001)
    first = make_delivery(payload, secret=JIRA_SECRET, delivery_id="t4-a")
    again = make_delivery(payload, secret=JIRA_SECRET, delivery_id="t4-b")
    with httpx.Client() as client:
        assert post(client, stack.url, first).status_code == 202
        r = post(client, stack.url, again)
    assert r.status_code in (200, 202) and r.json()["status"] in ("duplicate", "ignored")
    issue = jira_issue_id(4001)
    assert wait_until(lambda: comment_counts(stack.jira, [issue])[issue] >= 1, timeout_s=60), stack.logs()
    time.sleep(1.0)
    assert comment_counts(stack.jira, [issue])[issue] == 1
    assert stack.ledger is not None
    triages = stack.ledger.scalar(
        "SELECT count(*) FROM triage g JOIN ticket t ON t.id = g.ticket_id WHERE t.external_id = :i", i=issue
    )
    assert triages == 1


def test_t5_out_of_order_updates_end_in_the_newest_state(stack: Stack) -> None:
    """issue_updated v3, v1, v2 (payload timestamps): final state is v3; v1 and v2 are ignored as stale."""
    created = as_new_ticket(load_sample("jira_issue_created"), 5001, subject="v0")
    created["issue"]["fields"]["updated"] = "2026-01-01T10:00:00.000+0000"
    with httpx.Client() as client:
        assert (
            post(client, stack.url, make_delivery(created, secret=JIRA_SECRET, delivery_id="t5-0")).status_code == 202
        )
        outcomes = {}
        for version in (3, 1, 2):
            upd = copy.deepcopy(created)
            upd["webhookEvent"] = "jira:issue_updated"
            upd["issue"]["fields"]["summary"] = f"v{version}"
            upd["issue"]["fields"]["updated"] = f"2026-01-01T10:0{version}:00.000+0000"
            r = post(client, stack.url, make_delivery(upd, secret=JIRA_SECRET, delivery_id=f"t5-{version}"))
            assert r.status_code in (200, 202), r.text
            outcomes[version] = r.json()["status"]
    assert stack.ledger is not None
    subject = stack.ledger.scalar("SELECT subject FROM ticket WHERE external_id = :i", i=jira_issue_id(5001))
    assert subject == "v3"
    assert outcomes[1] == "stale" and outcomes[2] == "stale"


def test_t14_postgres_down_answers_503_never_2xx_and_recovers(fresh_stack: Stack) -> None:
    """pg_ctl stop -m immediate under traffic: 503 while down, /readyz fails, first 2xx soon after restart."""
    st = fresh_stack
    api = st.api()
    accepted: list[str] = []
    with httpx.Client() as client:
        for n in range(5):
            d = jira_ticket(14000 + n, delivery_id=f"t14-up-{n}")
            assert post(client, api.url, d).status_code == 202
            accepted.append(f"t14-up-{n}")
        st.pg.stop("immediate")
        down = [post(client, api.url, jira_ticket(14100 + n, delivery_id=f"t14-down-{n}")) for n in range(10)]
        assert {r.status_code for r in down} == {503}, [(r.status_code, r.text[:200]) for r in down]
        assert all(r.headers.get("retry-after") for r in down)
        assert client.get(f"{api.url}/readyz").status_code == 503
        st.pg.start()
        restarted = time.monotonic()
        first_ok = None
        for n in range(200):  # bounded: the sender retries every 0.1 s
            r = post(client, api.url, jira_ticket(14200 + n, delivery_id=f"t14-after-{n}"))
            assert r.status_code in (202, 503), r.text
            if r.status_code == 202:
                accepted.append(f"t14-after-{n}")
                first_ok = time.monotonic() - restarted
                break
            time.sleep(0.1)
        assert first_ok is not None, "API never recovered after PostgreSQL came back"
        print(f"T14 time to first 2xx after restart: {first_ok:.2f} s")
        assert client.get(f"{api.url}/readyz").status_code == 200
    assert st.ledger is not None
    stored = {r[0] for r in st.ledger.rows("SELECT delivery_id FROM inbound_event")}
    assert set(accepted) <= stored  # every 2xx was committed
    assert not any(d.startswith("t14-down-") for d in stored)  # no partial insert behind a 503


def test_t15_locked_table_answers_503_within_the_deadline_then_the_retry_is_not_duplicated(stack: Stack) -> None:
    """ACCESS EXCLUSIVE lock on `ticket`: the request deadline trips and answers 503 (sender retries later)."""
    assert stack.ledger is not None
    d = jira_ticket(15001, delivery_id="t15-1")
    conn = stack.ledger.engine.connect()
    tx = conn.begin()
    try:
        conn.exec_driver_sql("LOCK TABLE ticket IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        r = httpx.post(stack.url + d.path, content=d.body, headers=d.headers, timeout=30)
        took = time.monotonic() - started
    finally:
        tx.rollback()
        conn.close()
    print(f"T15 ack under a locked table: {r.status_code} after {took:.2f} s")
    assert r.status_code == 503
    # The sender retries; whatever the abandoned attempt did meanwhile, exactly one event row results.
    assert wait_until(
        lambda: post(httpx.Client(), stack.url, d).status_code in (200, 202), timeout_s=30, interval_s=0.5
    )
    n = stack.ledger.scalar("SELECT count(*) FROM inbound_event WHERE delivery_id = 't15-1'")
    assert n == 1


def test_t21_replays_and_skewed_timestamps_are_refused(stack: Stack) -> None:
    """ServiceNow outside +-300 s -> 401; a captured Jira delivery replayed -> 200 no-op."""
    assert stack.ledger is not None
    with httpx.Client() as client:
        stale = servicenow_ticket(21001)
        stamp = str(int(time.time()) - 360)
        headers = {
            **stale.headers,
            "X-SN-Timestamp": stamp,
            "X-SN-Signature": sign_servicenow(SN_SECRET, stamp, stale.body),
        }
        assert client.post(stack.url + stale.path, content=stale.body, headers=headers).status_code == 401
        future = str(int(time.time()) + 360)
        headers = {
            **stale.headers,
            "X-SN-Timestamp": future,
            "X-SN-Signature": sign_servicenow(SN_SECRET, future, stale.body),
        }
        assert client.post(stack.url + stale.path, content=stale.body, headers=headers).status_code == 401
        captured = jira_ticket(21002, delivery_id="t21-captured")
        assert post(client, stack.url, captured).status_code == 202
        before = stack.ledger.scalar("SELECT count(*) FROM inbound_event")
        replays = [post(client, stack.url, captured) for _ in range(5)]
    assert {r.status_code for r in replays} == {200}
    assert stack.ledger.scalar("SELECT count(*) FROM inbound_event") == before


def test_t22_oversized_bodies_get_413_without_buffering(stack: Stack) -> None:
    """1 MiB + 1 B and 25 MB: 413; the API's RSS grows by less than 20 MB."""
    api = stack.apis[0]
    rss_before = proc_stat(api.pid)[1]
    with httpx.Client() as client:
        body = b"x" * (1024 * 1024 + 1)
        r = client.post(
            f"{stack.url}/webhooks/jira", content=body, headers={"X-Hub-Signature": sign_jira(JIRA_SECRET, body)}
        )
        assert r.status_code == 413

        def chunks():  # 25 MB streamed without Content-Length: the server must stop reading at the limit
            for _ in range(25 * 16):
                yield b"y" * 65536

        try:
            r = client.post(f"{stack.url}/webhooks/jira", content=chunks(), headers={"X-Hub-Signature": "sha256=00"})
            assert r.status_code == 413
        except httpx.TransportError:
            pass  # the server may close the connection after answering 413 mid-upload
    growth_mib = (proc_stat(api.pid)[1] - rss_before) / 1024
    print(f"T22 API RSS growth after oversized bodies: {growth_mib:.1f} MiB")
    assert growth_mib < 20


def test_t22_slow_body_is_cut_off_by_the_server(stack: Stack) -> None:
    """A client trickling one byte per second is answered 408 (or dropped) within the server's body timeout."""
    sock = socket.create_connection(("127.0.0.1", stack.apis[0].port), timeout=30)
    try:
        sock.sendall(
            b"POST /webhooks/jira HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\nX-Hub-Signature: sha256=00\r\n\r\n"
        )
        started = time.monotonic()
        answer = b""
        for _ in range(60):  # bounded at 60 s
            try:
                sock.sendall(b"{")
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                answer = sock.recv(4096)  # data (the 408) or b"" (closed): either way the server cut us off
                break
            except TimeoutError:
                continue
        took = time.monotonic() - started
    finally:
        sock.close()
    print(f"T22 slow body cut after {took:.1f} s: {answer[:40]!r}")
    assert took < 60
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


def _signed(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature": sign_jira(JIRA_SECRET, body)}


_VALID = json.dumps(as_new_ticket(load_sample("jira_issue_created"), 18001)).encode()


def _hostile_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    base = json.loads(_VALID)
    obj_priority = copy.deepcopy(base)
    obj_priority["issue"]["fields"]["priority"] = {"name": {"$gt": ""}}
    null_summary = copy.deepcopy(base)
    null_summary["issue"]["fields"]["summary"] = None
    cases = [
        ("no signature", _VALID, {"Content-Type": "application/json"}),
        ("zero signature", _VALID, {"X-Hub-Signature": "sha256=" + "0" * 64}),
        ("garbage signature", _VALID, {"X-Hub-Signature": "garbage"}),
        ("servicenow secret on jira", _VALID, {"X-Hub-Signature": sign_jira(SN_SECRET, _VALID)}),
        ("NaN", b'{"webhookEvent": NaN}', {}),
        ("Infinity", b'{"webhookEvent": "jira:issue_created", "timestamp": Infinity}', {}),
        ("invalid utf-8", b'{"webhookEvent": "\xff\xfe"}', {}),
        ("lone surrogate", b'{"webhookEvent": "jira:issue_created", "x": "\\ud800"}', {}),
        ("NUL", _VALID.replace(b'"summary": "', b'"summary": "\\u0000'), {}),
        ("nested 10000", b'{"a":' * 10000 + b"1" + b"}" * 10000, {}),
        ("priority object", json.dumps(obj_priority).encode(), {}),
        ("summary null", json.dumps(null_summary).encode(), {}),
        ("not an object", b"[1, 2, 3]", {}),
        ("empty", b"", {}),
    ]
    return [(name, body, headers or _signed(body)) for name, body, headers in cases]


@pytest.mark.parametrize(("name", "body", "headers"), _hostile_bodies(), ids=[c[0] for c in _hostile_bodies()])
def test_bad_inputs_never_500_never_partial_insert(
    stack: Stack, name: str, body: bytes, headers: dict[str, str]
) -> None:
    """Bad inputs 17 and 18: 4xx (or a sanitised 2xx), never 5xx, and a rejected body stores nothing."""
    assert stack.ledger is not None
    before = stack.ledger.scalar("SELECT count(*) FROM inbound_event")
    r = httpx.post(
        f"{stack.url}/webhooks/jira",
        content=body,
        headers={"X-Atlassian-Webhook-Identifier": f"bad-{name}", **headers},
        timeout=30,
    )
    assert r.status_code < 500, (name, r.status_code, r.text[:300])
    after = stack.ledger.scalar("SELECT count(*) FROM inbound_event")
    if r.status_code >= 400:
        assert after == before, name
    if name in ("no signature", "zero signature", "garbage signature", "servicenow secret on jira"):
        assert r.status_code == 401
