"""Webhook in -> labels out and -> draft stored, end to end on the default setup: `itsm-triage run` (embedded SQLite
database and broker, the bundled model and shipped adapter, real worker processes) against a fake Jira on a free
port, the only thing faked. Signed Jira `issue_created` webhooks carry held-out tickets.

- labels: webhook sent -> the internal note (labels) arrives at the fake Jira;
- drafts: webhook sent -> the reply suggestion is stored (read from the service's database);
- steady phase: `--steady` tickets at `--rate` tickets/s; burst phase: `--burst` tickets sent at once, drained when
  every one of their notes has arrived.

Prints exactly these three lines (plus nothing else on stdout):

    labels p50 X.X s p95 X.X s
    drafts p50 X.X s p95 X.X s
    burst N drained in X.X s

    python bench/e2e.py [--steady 30] [--rate 0.5] [--burst 40] [--data var/data/test.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fakes.fake_jira import FakeJira  # noqa: E402
from tests.reliability.harness import jira_issue_id, jira_ticket, post  # noqa: E402
from tests.reliability.harness.servers import free_port  # noqa: E402
from tests.reliability.harness.service import JIRA_SECRET  # noqa: E402


def tickets(path: Path | None, n: int, seed: int = 5) -> list[tuple[str, str]]:
    """n (subject, body) pairs: a seeded sample of held-out tickets, else of the shipped adapter's memory."""
    rows: list[tuple[str, str]] = []
    if path and path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append((r.get("subject") or "", r.get("body") or ""))
    else:
        import gzip

        from models.adapter import DEFAULT_ADAPTER

        with gzip.open(DEFAULT_ADAPTER / "tickets.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [("", json.loads(line)["text"]) for line in f if line.strip()]
    random.Random(seed).shuffle(rows)
    return [rows[i % len(rows)] for i in range(n)]


class Clock:
    """When each ticket was sent, its note arrived (fake Jira hook) and its draft was stored (database poll)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.sent: dict[str, float] = {}
        self.noted: dict[str, float] = {}
        self.drafted: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def on_comment(self, issue: object, comment: object) -> None:
        """fake Jira hook: the first internal note of an issue is its labels."""
        if not getattr(comment, "public", True):
            self.noted.setdefault(str(getattr(issue, "id", "")), time.monotonic())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1) as conn:
                    rows = conn.execute(
                        "SELECT t.external_id FROM suggestion s JOIN ticket t ON t.id = s.ticket_id"
                    ).fetchall()
            except sqlite3.Error:
                continue
            now = time.monotonic()
            for (ext,) in rows:
                self.drafted.setdefault(str(ext), now)


def percentiles(values: list[float]) -> tuple[float, float]:
    return (float(np.percentile(values, 50)), float(np.percentile(values, 95))) if values else (float("nan"),) * 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steady", type=int, default=30, help="tickets in the steady phase")
    ap.add_argument("--rate", type=float, default=0.5, help="tickets per second in the steady phase")
    ap.add_argument("--burst", type=int, default=40, help="tickets sent at once in the burst phase")
    ap.add_argument("--data", type=Path, default=REPO / "var" / "data" / "test.jsonl")
    ap.add_argument("--timeout", type=float, default=600, help="give up waiting for notes / drafts after this")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="itsm-e2e-"))
    jira = FakeJira()
    jira.auto_create_issues = True
    clock = Clock(work / "itsm.db")
    jira.on_comment = clock.on_comment
    jira.start()
    port = free_port()
    env = {
        **os.environ,
        "ITSM_VAR_DIR": str(work),
        "ITSM_DATABASE_URL": f"sqlite:///{work / 'itsm.db'}",
        "ITSM_BROKER_URL": f"sqla+sqlite:///{work / 'broker.db'}",
        "ITSM_MODEL__CACHE_DIR": str(REPO / "var" / "models"),
        "ITSM_JIRA__WEBHOOK_SECRET": JIRA_SECRET,
        "ITSM_JIRA__ACCOUNT_ID": "bench-bot",
        "ITSM_LOG__JSON_LOGS": "true",
        **{"ITSM_JIRA__" + k.upper(): str(v) for k, v in jira.settings().items()},
    }
    log = (work / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    texts = tickets(args.data, 2 + args.steady + args.burst)
    try:
        with httpx.Client() as client:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if client.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            clock.start()

            def send(n: int) -> str:
                subject, body = texts[n]
                d = jira_ticket(n, subject=subject or f"Ticket {n}", body=body, delivery_id=f"e2e-{n}")
                ext = jira_issue_id(n)
                clock.sent[ext] = time.monotonic()
                resp = post(client, base, d)
                if resp.status_code >= 300:
                    raise SystemExit(f"webhook {n} answered {resp.status_code}: {resp.text[:200]}")
                return ext

            def wait(ids: list[str], seen: dict[str, float], what: str) -> None:
                end = time.monotonic() + args.timeout
                while time.monotonic() < end and not all(i in seen for i in ids):
                    time.sleep(0.1)
                missing = [i for i in ids if i not in seen]
                if missing:
                    raise SystemExit(f"{len(missing)} {what} never arrived (log: {work / 'run.log'})")

            # warm-up: both workers have loaded the model and compiled what they compile
            warm = [send(0), send(1)]
            wait(warm, clock.noted, "warm-up notes")
            wait([w for w in warm if w in _drafts_expected(work)], clock.drafted, "warm-up drafts")

            steady = []
            start = time.monotonic()
            for i in range(args.steady):
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
                steady.append(send(2 + i))
            wait(steady, clock.noted, "steady notes")
            expected = _drafts_expected(work)
            wait([s for s in steady if s in expected], clock.drafted, "steady drafts")

            burst_start = time.monotonic()
            burst = [send(2 + args.steady + i) for i in range(args.burst)]
            wait(burst, clock.noted, "burst notes")
            drained = max(clock.noted[b] for b in burst) - burst_start
    finally:
        clock.stop()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(2)
        try:  # a worker still finishing a draft (warm shutdown) must not outlive the bench
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        jira.stop()
        log.close()
    labels = [clock.noted[s] - clock.sent[s] for s in steady]
    drafts = [clock.drafted[s] - clock.sent[s] for s in steady if s in clock.drafted]
    lp50, lp95 = percentiles(labels)
    dp50, dp95 = percentiles(drafts)
    print(f"labels p50 {lp50:.1f} s p95 {lp95:.1f} s")
    print(f"drafts p50 {dp50:.1f} s p95 {dp95:.1f} s")
    print(f"burst {args.burst} drained in {drained:.1f} s")


def _drafts_expected(work: Path) -> set[str]:
    """Tickets whose triage asked for a draft (an empty ticket gets none)."""
    with sqlite3.connect(f"file:{work / 'itsm.db'}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute(
            "SELECT t.external_id FROM triage g JOIN ticket t ON t.id = g.ticket_id WHERE g.draft_status != 'none'"
        ).fetchall()
    return {str(r[0]) for r in rows}


if __name__ == "__main__":
    main()
