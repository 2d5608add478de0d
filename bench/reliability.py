"""One reliability report: steady signed traffic while faults are injected, then the two headline invariants.

    python bench/reliability.py            # default run (a few minutes on 2 cores)
    python bench/reliability.py --full     # the long counts of RELIABILITY.md (T6 x50, T7 x20, longer outages)
    python bench/reliability.py --soak 60  # T26 (nightly): 60 min at 10 rps, a T6/T11/T14 fault every 5 min,
                                           # RSS slope of the API and the worker, stuck tickets, final backlog

Everything runs on loopback with private PostgreSQL and Redis processes on free ports (the shared servers are
never touched), the real API and Celery worker processes, and the fake Jira (the only thing faked). The sender
behaves like Jira: it retries a delivery that was not acknowledged with 2xx. The report ends with

    lost: N         tickets acknowledged (2xx) that never got their write-back in Jira
    duplicated: N   write-backs beyond the one each ticket should get (duplicate side effects)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.harness import (  # noqa: E402
    Stack,
    comment_counts,
    jira_issue_id,
    jira_ticket,
    lost_and_duplicated,
    post,
    tree_stat,
    wait_until,
)

ENV = {
    "ITSM_WORKER__TASK_TIME_LIMIT_S": "20",
    "ITSM_WORKER__VISIBILITY_TIMEOUT_S": "30",
    "ITSM_WORKER__LEASE_S": "25",
    "ITSM_WORKER__SWEEP_INTERVAL_S": "2",
    "ITSM_WORKER__STUCK_GRACE_S": "5",
    "ITSM_WORKER__MAX_ATTEMPTS": "5",
    "ITSM_WORKER__DELIVERY_BACKOFF_BASE_S": "0.5",
    "ITSM_WORKER__DELIVERY_BACKOFF_CAP_S": "4",
    "ITSM_WORKER__DELIVERY_MAX_RETRIES": "8",
    "ITSM_JIRA__TIMEOUT_S": "2",
    "ITSM_MODEL__FAKE_LATENCY_MS": "300",
    "ITSM_MODEL__BATCH_WAIT_MS": "100",
    "ITSM_WORKER__STALL_TIMEOUT_S": "15",
}


@dataclass
class Sender:
    """Paced signed deliveries from a thread; retries non-2xx like Jira does (bounded)."""

    url: str
    rps: float
    base: int = 500000
    sent: int = 0
    accepted: list[int] = field(default_factory=list)
    answers: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    gave_up: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sending."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the delivery in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _run(self) -> None:
        started = time.monotonic()
        with httpx.Client() as client:
            while not self._stop.is_set():
                n = self.base + self.sent
                self.sent += 1
                self._deliver(client, n)
                delay = started + self.sent / self.rps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def _deliver(self, client: httpx.Client, n: int) -> None:
        d = jira_ticket(n, delivery_id=f"rel-{n}")
        for attempt in range(60):  # Jira retries for a long time; 60 x <=1 s bounds a wedged run
            try:
                code = post(client, self.url, d, timeout_s=15).status_code
            except httpx.TransportError:
                code = 0
            self.answers[code] = self.answers.get(code, 0) + 1
            if 200 <= code < 300:
                self.accepted.append(n)
                return
            self.retries += 1
            time.sleep(min(1.0, 0.1 * (attempt + 1)))
        self.gave_up.append(n)


def _kill_pool_child(st: Stack) -> str:
    for pid in st.workers[-1].pool_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return "T6 kill -9 of the worker's pool child"


def _kill_worker(st: Stack) -> str:
    st.workers[-1].kill_group(signal.SIGKILL)
    st.worker()  # the replacement becomes workers[-1]
    return "T7 kill -9 of the whole worker (main + children), then a restart"


def _redis_restart(st: Stack, seconds: float) -> str:
    st.redis.shutdown()
    time.sleep(seconds)
    st.redis.start()
    return f"T11 redis graceful restart ({seconds:g} s down, AOF everysec)"


def _redis_crash(st: Stack, seconds: float) -> str:
    st.redis.kill()
    time.sleep(seconds)
    st.redis.start()
    return f"T12 redis kill -9 ({seconds:g} s down)"


def _redis_hang(st: Stack, seconds: float) -> str:
    st.redis.signal(signal.SIGSTOP)
    time.sleep(seconds)
    st.redis.signal(signal.SIGCONT)
    return f"T13 redis SIGSTOP {seconds:g} s"


def _postgres_down(st: Stack, seconds: float) -> str:
    st.pg.stop("immediate")
    time.sleep(seconds)
    st.pg.start()
    return f"T14 postgres stop -m immediate ({seconds:g} s down)"


def _jira_faults(st: Stack, k: int) -> str:
    st.jira.fail_next(429, times=k, method="POST", path=r"/comment$", headers={"Retry-After": "2"})
    st.jira.fail_next(503, times=k, method="POST", path=r"/comment$")
    st.jira.drop_after_write_next(times=k, method="POST", path=r"/comment$")
    st.jira.hang_next(3.0, times=k, apply=True, method="POST", path=r"/comment$")
    return f"T16-T18 Jira: {k}x 429 Retry-After 2, {k}x 503, {k}x lost response after write, {k}x timeout after write"


def _drain(st: Stack, sender: Sender, began: float, *, interval_s: float) -> tuple[list[str], bool]:
    """After the traffic stopped: the acknowledged tickets' issue ids, and whether each got a write-back in 300 s."""
    print(f"  traffic stopped after {time.monotonic() - began:.0f} s; draining ...", flush=True)
    issues = [jira_issue_id(n) for n in sender.accepted]
    drained = wait_until(
        lambda: all(c >= 1 for c in comment_counts(st.jira, issues).values()), timeout_s=300, interval_s=interval_s
    )
    return issues, drained


def _tree_rss_mib(pid: int) -> float:
    """RSS of a process and its descendants (MiB); 0 for a process that is gone."""
    try:
        return tree_stat(pid)[1] / 1024
    except OSError:
        return 0.0


def _slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return cov / var * 3600 if var else 0.0


def soak(minutes: float, rps: float, fault_every_s: float) -> None:
    """T26: steady traffic with a T6 / T11 / T14 fault every `fault_every_s`; memory slope, stuck tickets, backlog."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"commit {commit.strip()}  soak {minutes:g} min at {rps:g} rps, a fault every {fault_every_s:g} s")
    began = time.monotonic()
    faults: list[str] = []
    rss: dict[str, list[tuple[float, float]]] = {"api": [], "worker": []}
    cycle = [
        lambda st: _kill_pool_child(st),
        lambda st: _redis_restart(st, 8.0),
        lambda st: _postgres_down(st, 8.0),
    ]
    with Stack(env=ENV) as st:
        api = st.api()
        st.worker()
        st.sweeper()
        sender = Sender(st.url, rps)
        sender.start()
        end = began + minutes * 60
        next_fault = began + fault_every_s
        warm_until = began + min(120.0, minutes * 60 / 5)  # allocator and caches settle before the slope counts
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= warm_until:
                    rss["api"].append((now - began, _tree_rss_mib(api.pid)))
                    rss["worker"].append((now - began, _tree_rss_mib(st.workers[-1].pid)))
                if now >= next_fault:
                    desc = cycle[len(faults) % len(cycle)](st)
                    print(f"  {now - began:5.0f} s  {desc}", flush=True)
                    faults.append(desc)
                    next_fault += fault_every_s
                time.sleep(5.0)
        finally:
            sender.stop()
        issues, drained = _drain(st, sender, began, interval_s=2.0)
        assert st.ledger is not None
        stuck = int(
            st.ledger.scalar("SELECT count(*) FROM inbound_event WHERE status IN ('received', 'queued', 'processing')")
            or 0
        )
        backlog = int(st.ledger.scalar("SELECT count(*) FROM delivery WHERE status NOT IN ('sent', 'dead')") or 0)
        lost, duplicated = lost_and_duplicated(comment_counts(st.jira, issues))
    print()
    print("faults injected:")
    for desc, times in Counter(faults).items():
        print(f"  {desc}  x{times}")
    acked = len(sender.accepted)
    print(f"tickets sent / acknowledged:        {sender.sent} / {acked}  (gave up {len(sender.gave_up)})")
    for name, samples in rss.items():
        if samples:
            first, last = samples[0][1], samples[-1][1]
            print(
                f"{name + ' RSS (MiB):':35} {first:.1f} -> {last:.1f} ({(last - first) / first * 100:+.1f} %), "
                f"slope {_slope_per_hour(samples):+.1f} MiB/h over {len(samples)} samples"
            )
    print(f"drained within 300 s:               {drained}")
    print(f"stuck events after the drain:       {stuck}")
    print(f"deliveries still pending:           {backlog}")
    print(f"wall time:                          {time.monotonic() - began:.0f} s")
    print()
    print(f"lost: {lost}")
    print(f"duplicated: {duplicated}")


def main() -> None:
    """Run the scenario and print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="long counts (T6 x50, T7 x20, 60 s outages)")
    parser.add_argument("--rps", type=float, default=10.0, help="steady webhook rate during the faults")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES", help="T26 soak for MINUTES instead")
    parser.add_argument("--fault-every", type=float, default=300.0, metavar="S", help="soak: seconds between faults")
    args = parser.parse_args()
    if args.soak:
        soak(args.soak, args.rps, args.fault_every)
        return
    rng = random.Random(args.seed)
    full = args.full
    t6_kills, t7_kills = (50, 20) if full else (6, 2)
    outage = 60.0 if full else 8.0
    jira_k = 25 if full else 4

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"commit {commit.strip()}  mode {'full' if full else 'default'}  rate {args.rps:g} rps")
    print("settings " + " ".join(f"{k.removeprefix('ITSM_')}={v}" for k, v in ENV.items()))
    began = time.monotonic()
    faults: list[str] = []
    with Stack(env=ENV) as st:
        st.api()
        st.worker()
        st.sweeper()
        sender = Sender(st.url, args.rps)
        sender.start()
        try:
            time.sleep(5)
            faults.append(_jira_faults(st, jira_k))
            for _ in range(t6_kills):
                time.sleep(rng.uniform(2, 6))
                faults.append(_kill_pool_child(st))
            for _ in range(t7_kills):
                time.sleep(rng.uniform(3, 8))
                faults.append(_kill_worker(st))
            for fault in (_redis_restart, _redis_crash, _redis_hang, _postgres_down):
                time.sleep(5)
                print(f"  injecting {fault.__name__} ...", flush=True)
                faults.append(fault(st, outage))
            time.sleep(5)
        finally:
            sender.stop()
        issues, drained = _drain(st, sender, began, interval_s=1.0)
        time.sleep(3)  # a straggling duplicate would land now
        assert st.ledger is not None
        snap = st.ledger.snapshot()
        lost, duplicated = lost_and_duplicated(comment_counts(st.jira, issues))
        dead = st.ledger.rows("SELECT id, last_error FROM inbound_event WHERE status = 'dead'")
        dead_deliveries = st.ledger.rows("SELECT id, last_error FROM delivery WHERE status = 'dead'")

    print()
    print("faults injected:")
    for desc, times in Counter(faults).items():
        print(f"  {desc}" + (f"  x{times}" if times > 1 else ""))
    print()
    print(f"tickets sent (unique deliveries):   {sender.sent}")
    print(f"  acknowledged 2xx:                 {len(sender.accepted)}")
    print(f"  sender retries after non-2xx:     {sender.retries}  answers {dict(sorted(sender.answers.items()))}")
    print(f"  given up by the sender:           {len(sender.gave_up)}")
    print(f"stored (inbound events):            {snap.stored}  {dict(snap.events)}")
    per_version = snap.triages_per_ticket_version_max
    print(f"triaged (triage rows):              {snap.triages}  max per ticket version {per_version}")
    print(f"delivered (outbox rows sent):       {snap.delivered}  {dict(snap.deliveries)}")
    print(f"dead-lettered events/deliveries:    {len(dead)} / {len(dead_deliveries)}")
    print(f"drained within 300 s:               {drained}")
    print(f"wall time:                          {time.monotonic() - began:.0f} s")
    print()
    print(f"lost: {lost}")
    print(f"duplicated: {duplicated}")


if __name__ == "__main__":
    main()
