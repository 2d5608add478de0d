"""Worker and broker faults with real processes (RELIABILITY T6, T7, T11, T12, T13).

Short per-commit variants; bench/reliability.py runs the long counts. Every test ends on the two invariants:
each ticket sent gets exactly one write-back in the fake Jira (`lost == 0`, `duplicated == 0`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.harness import (
    Stack,
    WorkerProcess,
    comment_counts,
    jira_issue_id,
    jira_ticket,
    lost_and_duplicated,
    post,
    send_paced,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# Short leases and a fast sweeper so recovery paths run within seconds; VT > time limit as the settings demand.
FAULT_ENV = {
    "ITSM_WORKER__TASK_TIME_LIMIT_S": "20",  # the soft limit is 10 s below it: keep it above the 4 s model call
    "ITSM_WORKER__VISIBILITY_TIMEOUT_S": "30",
    "ITSM_WORKER__LEASE_S": "25",
    "ITSM_WORKER__SWEEP_INTERVAL_S": "2",
    "ITSM_WORKER__STUCK_GRACE_S": "4",
    "ITSM_WORKER__DELIVERY_BACKOFF_BASE_S": "0.5",
    "ITSM_WORKER__DELIVERY_BACKOFF_CAP_S": "2",
    "ITSM_MODEL__BATCH_WAIT_MS": "0",
}
SLOW_MODEL = {"ITSM_MODEL__FAKE_LATENCY_MS": "4000"}


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[Stack]:
    """Private servers, fake Jira and one API with the short recovery settings; tests start their workers."""
    from tests.reliability.conftest import _skip_without_servers

    _skip_without_servers()
    with Stack(env=FAULT_ENV) as st:
        st.api()
        st.sweeper()
        yield st


def _event_state(st: Stack, issue_id: str) -> tuple[str | None, int]:
    assert st.ledger is not None
    rows = st.ledger.rows(
        "SELECT e.status, e.attempts FROM inbound_event e JOIN ticket t ON t.id = e.ticket_id WHERE t.external_id = :i",
        i=issue_id,
    )
    return (rows[0][0], int(rows[0][1])) if rows else (None, 0)


def _settle(st: Stack, issues: list[str], *, timeout_s: float) -> tuple[int, int]:
    """Wait for one write-back per issue (bounded), give stragglers a moment, return (lost, duplicated)."""
    wait_until(lambda: all(c >= 1 for c in comment_counts(st.jira, issues).values()), timeout_s=timeout_s)
    time.sleep(1.5)  # a duplicate execution racing the first would land now
    return lost_and_duplicated(comment_counts(st.jira, issues))


def test_t6_pool_child_sigkill_mid_task_is_redelivered_once_without_duplicate_side_effects(fault_stack: Stack) -> None:
    """kill -9 the prefork child at a random moment of a 4 s model call; the task is redelivered and finishes."""
    st = fault_stack
    worker = st.worker(**SLOW_MODEL)
    rng = random.Random(6)
    issues, latencies, executions = [], [], []
    try:
        with httpx.Client() as client:
            for run in range(4):
                n = 6000 + run
                issue = jira_issue_id(n)
                issues.append(issue)
                assert post(client, st.url, jira_ticket(n, delivery_id=f"t6-{run}")).status_code == 202
                assert wait_until(lambda i=issue: _event_state(st, i)[0] == "processing", timeout_s=30), st.logs()
                time.sleep(rng.uniform(0.5, 3.5))
                children = worker.pool_children()
                assert children, "no pool child to kill"
                killed_at = time.monotonic()
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                assert wait_until(lambda i=issue: comment_counts(st.jira, [i])[i] >= 1, timeout_s=60), st.logs()
                latencies.append(time.monotonic() - killed_at)
                executions.append(_event_state(st, issue)[1])
        lost, duplicated = _settle(st, issues, timeout_s=30)
    finally:
        worker.stop()
    print(f"T6 kill->write-back s: {[round(x, 1) for x in latencies]}; attempts per ticket: {executions}")
    assert (lost, duplicated) == (0, 0)
    assert all(a >= 2 for a in executions)  # the kill really interrupted a running attempt


def test_t7_whole_worker_sigkill_then_restart_loses_nothing(fault_stack: Stack) -> None:
    """kill -9 the worker's whole process group mid-task, start a new worker: redelivered or swept, once."""
    st = fault_stack
    issues, latencies = [], []
    worker: WorkerProcess | None = None
    try:
        for run in range(2):
            worker = st.worker(**SLOW_MODEL)
            n = 7000 + run
            issue = jira_issue_id(n)
            issues.append(issue)
            assert post(httpx.Client(), st.url, jira_ticket(n, delivery_id=f"t7-{run}")).status_code == 202
            assert wait_until(lambda i=issue: _event_state(st, i)[0] == "processing", timeout_s=30), st.logs()
            time.sleep(1.0)
            killed_at = time.monotonic()
            worker.kill_group(signal.SIGKILL)
            worker = st.worker(**SLOW_MODEL)
            assert wait_until(lambda i=issue: comment_counts(st.jira, [i])[i] >= 1, timeout_s=90), st.logs()
            latencies.append(time.monotonic() - killed_at)
            worker.stop()
            worker = None
        worker = st.worker()  # let a late VT redelivery of the killed messages show up, if any
        time.sleep(3)
        lost, duplicated = _settle(st, issues, timeout_s=10)
    finally:
        if worker is not None:
            worker.stop()
    print(f"T7 kill->write-back s (VT=30 s, lease=25 s): {[round(x, 1) for x in latencies]}")
    assert (lost, duplicated) == (0, 0)


def _traffic_with_fault(st: Stack, base: int, count: int, rps: float, fault: threading.Thread) -> list[int]:
    """Send `count` tickets at `rps` while `fault` runs; returns the HTTP statuses."""
    deliveries = [jira_ticket(base + n, delivery_id=f"b{base}-{n}") for n in range(count)]
    fault.start()
    statuses = send_paced(st.url, deliveries, rps=rps)
    fault.join(timeout=120)
    return statuses


# T13 exposed a real, intermittent fault (about 1 run in 3 here): after Redis is frozen for 8 s while an ack is
# pending ("Couldn't ack ... TimeoutError"), the Celery consumer never issues another BRPOP, so messages pile up in
# Redis and no ticket is processed (cf. celery/celery#8030, #2415). The worker's consumer watchdog
# (workers/watchdog.py) now reconnects it; the stall timeout is shortened here so the test stays short.
STALL_ENV = {"ITSM_WORKER__STALL_TIMEOUT_S": "15"}


@pytest.mark.parametrize("mode", ["t11_graceful_restart", "t12_crash", "t13_hang"])
def test_redis_outage_under_load_keeps_acks_2xx_and_loses_nothing(fault_stack: Stack, mode: str) -> None:
    """Redis shut down (AOF), SIGKILLed, or SIGSTOPped for a few seconds while 20 rps arrive."""
    st = fault_stack
    worker = st.worker(**STALL_ENV)
    base = {"t11_graceful_restart": 11000, "t12_crash": 12000, "t13_hang": 13000}[mode]
    marks: dict[str, float] = {}

    def fault() -> None:
        time.sleep(1.0)
        marks["down"] = time.monotonic()
        if mode == "t11_graceful_restart":
            st.redis.shutdown()
            time.sleep(5)
            st.redis.start()
        elif mode == "t12_crash":
            st.redis.kill()
            time.sleep(3)
            st.redis.start()
        else:
            st.redis.signal(signal.SIGSTOP)
            time.sleep(8)
            st.redis.signal(signal.SIGCONT)
        marks["up"] = time.monotonic()

    try:
        statuses = _traffic_with_fault(st, base, 80, 20.0, threading.Thread(target=fault))
        issues = [jira_issue_id(base + n) for n in range(80)]
        lost, duplicated = _settle(st, issues, timeout_s=90)
        recovered = time.monotonic() - marks["up"]
    finally:
        worker.stop()
    non_2xx = [s for s in statuses if not 200 <= s < 300]
    stalls = st.logs_full().count("consumer_stalled")
    print(
        f"{mode}: non-2xx={len(non_2xx)} lost={lost} duplicated={duplicated} settled {recovered:.1f} s after up; "
        f"watchdog reconnects {stalls}"
    )
    assert non_2xx == [], st.logs()
    assert (lost, duplicated) == (0, 0), _broker_state(st) + st.logs()


def _broker_state(st: Stack) -> str:
    """Queue lengths and Redis client list, to tell a wedged consumer from a lost message on failure."""
    cli = ["redis-cli", "-p", str(st.redis.port)]
    out = [
        subprocess.run([*cli, *cmd], capture_output=True, text=True, timeout=10, check=False).stdout
        for cmd in (["llen", "triage"], ["llen", "deliver"], ["hlen", "unacked"], ["client", "list"])
    ]
    assert st.ledger is not None
    return f"triage/deliver/unacked={out[:3]} events={dict(st.ledger.snapshot().events)}\nclients:\n{out[3]}\n"


def test_t8_graceful_shutdown_mid_task_finishes_or_requeues_it(fault_stack: Stack) -> None:
    """SIGTERM during a 4 s model call (a deploy): the task finishes or comes back; one write-back."""
    st = fault_stack
    worker = st.worker(**SLOW_MODEL)
    issue = jira_issue_id(8001)
    replacement: WorkerProcess | None = None
    try:
        assert post(httpx.Client(), st.url, jira_ticket(8001, delivery_id="t8-1")).status_code == 202
        assert wait_until(lambda: _event_state(st, issue)[0] == "processing", timeout_s=30), st.logs()
        took = worker.terminate(timeout_s=60)
        replacement = st.worker()
        lost, duplicated = _settle(st, [issue], timeout_s=60)
    finally:
        worker.stop()
        if replacement is not None:
            replacement.stop()
    print(f"T8 warm shutdown took {took:.1f} s; state {_event_state(st, issue)}")
    assert (lost, duplicated) == (0, 0)


def test_t10_poison_message_is_dead_lettered_after_bounded_attempts(fault_stack: Stack) -> None:
    """A ticket on which the model always fails: retried at most max_attempts times, then `dead`, no tight loop."""
    st = fault_stack
    worker = st.worker()
    issue = jira_issue_id(10001)
    try:
        d = jira_ticket(10001, body="FAKE_LLM_RAISE printer broken", delivery_id="t10-1")
        assert post(httpx.Client(), st.url, d).status_code == 202
        assert wait_until(lambda: _event_state(st, issue)[0] == "dead", timeout_s=90), (
            _event_state(st, issue),
            st.logs(),
        )
        time.sleep(3)  # a tight redelivery loop would keep raising the attempt count
        status, attempts = _event_state(st, issue)
    finally:
        worker.stop()
    print(f"T10 poison ticket: {status} after {attempts} attempts")
    assert status == "dead" and attempts <= 3
    assert comment_counts(st.jira, [issue])[issue] == 0
