"""Sending signed deliveries and reading the invariants back: sent / stored / triaged / delivered, lost, duplicated."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from service.samples import Delivery, as_new_ticket, load_sample, make_delivery
from tests.reliability.harness.service import JIRA_SECRET, SN_SECRET

_JIRA_BASE = load_sample("jira_issue_created")
_SN_BASE = load_sample("servicenow_incident_webhook")


def jira_ticket(
    n: int, *, subject: str | None = None, body: str | None = None, delivery_id: str | None = None
) -> Delivery:
    """A signed Jira `jira:issue_created` for ticket number n (issue id 900000+n, key ITSD-(100000+n))."""
    payload = as_new_ticket(_JIRA_BASE, n, subject=subject or f"Ticket {n}: VPN drops", body=body)
    return make_delivery(payload, secret=JIRA_SECRET, delivery_id=delivery_id or f"rel-{n}")


def jira_issue_id(n: int) -> str:
    """The Jira issue id of ticket n."""
    return str(900000 + n)


def servicenow_ticket(n: int, *, subject: str | None = None, body: str | None = None) -> Delivery:
    """A signed ServiceNow incident webhook for ticket number n (timestamped now)."""
    payload = as_new_ticket(_SN_BASE, n, subject=subject or f"Incident {n}", body=body)
    return make_delivery(payload, secret=SN_SECRET)


def post(client: httpx.Client, base_url: str, d: Delivery, *, timeout_s: float = 30.0) -> httpx.Response:
    """POST one delivery (raises nothing on non-2xx: callers count statuses)."""
    return client.post(base_url + d.path, content=d.body, headers=d.headers, timeout=timeout_s)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `predicate` until it holds or the time is up; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval_s)
    return False


@dataclass
class Snapshot:
    """Row counts of the durable state."""

    events: Counter[str] = field(default_factory=Counter)
    tickets: int = 0
    triages: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    suggestions: int = 0
    triages_per_ticket_version_max: int = 0
    deliveries_per_key_max: int = 0

    @property
    def stored(self) -> int:
        """Inbound events committed."""
        return sum(self.events.values())

    @property
    def delivered(self) -> int:
        """Outbox rows sent."""
        return self.deliveries.get("sent", 0)


class Ledger:
    """Reads the service's database directly (bypassing the API) to check the invariants."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True, pool_size=2)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    def scalar(self, sql: str, **params: Any) -> Any:
        """One value."""
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        """All rows."""
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def snapshot(self) -> Snapshot:
        """Counts of events by status, tickets, triages, deliveries by status."""
        s = Snapshot()
        s.events = Counter({r[0]: r[1] for r in self.rows("SELECT status, count(*) FROM inbound_event GROUP BY 1")})
        s.tickets = int(self.scalar("SELECT count(*) FROM ticket") or 0)
        s.triages = int(self.scalar("SELECT count(*) FROM triage") or 0)
        s.deliveries = Counter({r[0]: r[1] for r in self.rows("SELECT status, count(*) FROM delivery GROUP BY 1")})
        s.suggestions = int(self.scalar("SELECT count(*) FROM suggestion") or 0)
        s.triages_per_ticket_version_max = int(
            self.scalar(
                "SELECT coalesce(max(c), 0) FROM"
                " (SELECT count(*) AS c FROM triage GROUP BY ticket_id, source_version) t"
            )
            or 0
        )
        s.deliveries_per_key_max = int(
            self.scalar(
                "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM delivery GROUP BY idempotency_key) t"
            )
            or 0
        )
        return s

    def external_ids_triaged(self) -> set[str]:
        """External ids of tickets that have at least one triage row."""
        return {
            r[0] for r in self.rows("SELECT DISTINCT t.external_id FROM ticket t JOIN triage g ON g.ticket_id = t.id")
        }


def comment_counts(fake_jira: Any, issue_ids: list[str]) -> dict[str, int]:
    """Comments (internal or public, any API) the fake Jira holds per issue id."""
    out: dict[str, int] = {}
    for issue_id in issue_ids:
        issue = fake_jira.issues.get(issue_id)
        out[issue_id] = len(issue.comments) if issue is not None else 0
    return out


def lost_and_duplicated(counts: dict[str, int], *, expected_per_issue: int = 1) -> tuple[int, int]:
    """`lost`: issues without their write-back; `duplicated`: extra write-backs beyond the expected one."""
    lost = sum(1 for c in counts.values() if c < expected_per_issue)
    duplicated = sum(max(0, c - expected_per_issue) for c in counts.values())
    return lost, duplicated


def send_paced(base_url: str, deliveries: list[Delivery], *, rps: float, timeout_s: float = 30.0) -> list[int]:
    """Send deliveries one after another at a fixed rate (a sender that does not back off); returns statuses.

    A transport error counts as status 0 (the sender would retry it; the caller decides what that means).
    """
    statuses: list[int] = []
    started = time.monotonic()
    with httpx.Client() as client:
        for i, d in enumerate(deliveries):
            delay = started + i / rps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                statuses.append(post(client, base_url, d, timeout_s=timeout_s).status_code)
            except httpx.TransportError:
                statuses.append(0)
    return statuses
