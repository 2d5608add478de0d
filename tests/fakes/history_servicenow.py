"""The fake ServiceNow with an incident history: Table API listing with encoded queries, keyset-friendly ordering,
`sysparm_display_value=all`, dot-walked fields, `sys_journal_field` entries of many incidents at once, and the
Aggregate API count.

The encoded-query subset: conditions joined by ``^`` with =, !=, >=, <=, >, <, IN, NOT IN, LIKE, STARTSWITH on
the incident fields below, and ``ORDERBY`` / ``ORDERBYDESC``. A real instance silently ignores a condition it
cannot parse (and returns everything); this fake answers 400 instead, so a test notices.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes._server import Recorded, Reply
from tests.fakes.fake_servicenow import PRIORITY_MATRIX, FakeServiceNow
from tests.fakes.history_corpus import BULK, PastTicket, PastTickets

USER_TZ = timezone(timedelta(hours=1))  # display values are in the user's zone; values are UTC
IMPACT_URGENCY = {"P1": ("1", "1"), "P2": ("1", "2"), "P3": ("2", "2"), "P4": ("3", "2"), "P5": ("3", "3")}
LEVELS = {"1": "High", "2": "Medium", "3": "Low"}
PRIORITIES = {"1": "Critical", "2": "High", "3": "Moderate", "4": "Low", "5": "Planning"}
CATEGORIES = {
    "SOFTWARE_APP": "software",
    "NETWORK": "network",
    "GENERAL": "inquiry",
    "BILLING_PURCHASE": "billing",
    "SECURITY": "security",
    "SERVICE_OUTAGE": "outage",
    "HR_ADMIN": "hr",
}
AGENT_USER = "alex.agent"
_CONDITION = re.compile(r"^(?P<field>[a-z_][a-z0-9_.]*?)(?P<op>>=|<=|!=|=|>|<|NOT IN|IN|LIKE|STARTSWITH)(?P<value>.*)$")


def sn_time(when: datetime) -> str:
    """ServiceNow's `YYYY-MM-DD HH:MM:SS`."""
    return when.strftime("%Y-%m-%d %H:%M:%S")


def group_id(name: str) -> str:
    """A stable sys_id for an assignment group."""
    return hashlib.sha1(name.encode()).hexdigest()[:32]


class QueryError(ValueError):
    """An encoded query the fake cannot run."""


def parse_query(text: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, bool]]]:
    """Conditions (field, op, value) and the order (field, descending)."""
    conditions: list[tuple[str, str, str]] = []
    order: list[tuple[str, bool]] = []
    for part in (p for p in text.split("^") if p):
        if part.startswith("ORDERBYDESC"):
            order.append((part[11:], True))
        elif part.startswith("ORDERBY"):
            order.append((part[7:], False))
        elif part.startswith(("OR", "NQ")):
            raise QueryError(f"this fake does not support {part[:2]} ({part!r})")
        else:
            m = _CONDITION.match(part)
            if m is None:
                raise QueryError(f"cannot parse condition {part!r}")
            conditions.append((m["field"], m["op"], m["value"]))
    return conditions, order


def _holds(actual: str, op: str, value: str) -> bool:
    if op in ("IN", "NOT IN"):
        return (actual in value.split(",")) == (op == "IN")
    if op == "LIKE":
        return value.lower() in actual.lower()
    if op == "STARTSWITH":
        return actual.lower().startswith(value.lower())
    return {
        "=": actual == value,
        "!=": actual != value,
        ">=": actual >= value,
        "<=": actual <= value,
        ">": actual > value,
        "<": actual < value,
    }[op]


class HistoryServiceNow(FakeServiceNow):
    """FakeServiceNow plus `tickets` resolved / closed incidents that the history import reads."""

    name = "fake-servicenow-history"

    def __init__(self, *, tickets: int = 0, bulk: tuple[int, int, int] = BULK, **kw: Any) -> None:
        super().__init__(**kw)
        self.history = PastTickets(tickets, bulk=bulk)
        self._matches: dict[str, list[tuple[str, int]]] = {}
        self.route("GET", r"/api/now(?:/v[12])?/stats/(?P<table>[^/]+)", self._stats)

    # -- records --

    def record(self, t: PastTicket) -> dict[str, tuple[str, str]]:
        """Every field of an incident as (value, display value)."""
        impact, urgency = IMPACT_URGENCY.get(t.priority, ("2", "2"))
        priority = PRIORITY_MATRIX[(impact, urgency)]
        category = CATEGORIES.get(t.category, t.category.lower())
        state = ("6", "Resolved") if t.n % 4 == 0 else ("7", "Closed")
        updated = t.updated_at
        return {
            "sys_id": (t.sys_id, t.sys_id),
            "number": (t.number, t.number),
            "short_description": (t.subject, t.subject),
            "description": (t.body, t.body),
            "category": (category, category.title()),
            "subcategory": ("", ""),
            "assignment_group": (group_id(t.queue), t.queue),
            "impact": (impact, f"{impact} - {LEVELS[impact]}"),
            "urgency": (urgency, f"{urgency} - {LEVELS[urgency]}"),
            "priority": (priority, f"{priority} - {PRIORITIES[priority]}"),
            "state": state,
            "active": ("false", "false"),
            "close_code": ("Duplicate" if t.resolution == "Duplicate" else "Solved (Permanently)",) * 2,
            "sys_updated_on": (sn_time(updated), sn_time(updated.astimezone(USER_TZ))),
            "resolved_at": (sn_time(t.resolved_at), sn_time(t.resolved_at.astimezone(USER_TZ))),
            "caller_id": (f"{0xC0000000 + t.n:032x}", f"Customer {t.n}"),
            "caller_id.user_name": (f"customer.{t.n}", f"customer.{t.n}"),
            "assignment_group.name": (t.queue, t.queue),
        }

    def _render(self, inc: Any, req: Recorded) -> dict[str, Any]:
        if not isinstance(inc, PastTicket):
            return super()._render(inc, req)
        display = (req.param("sysparm_display_value") or "false").lower()
        rec = self.record(inc)
        fields = (req.param("sysparm_fields") or "").split(",") if req.param("sysparm_fields") else list(rec)
        out: dict[str, Any] = {}
        for name in fields:
            if name not in rec:
                continue
            value, shown = rec[name]
            if display == "all":
                cell: dict[str, str] = {"display_value": shown, "value": value}
                if name in ("assignment_group", "caller_id") and req.param("sysparm_exclude_reference_link") != "true":
                    cell["link"] = f"{self.url}/api/now/table/sys_user_group/{value}"
                out[name] = cell
            else:
                out[name] = shown if display == "true" else value
        return out

    # -- listing --

    def _query(self, text: str) -> list[int]:
        """Matching ticket numbers in the query's order; keyset pages reuse one sorted scan of the history."""
        conditions, order = parse_query(text)
        window = [c for c in conditions if c[0] == "sys_updated_on"]
        rest = [c for c in conditions if c[0] != "sys_updated_on"]
        key = repr((rest, order))
        ranked = self._matches.get(key)
        if ranked is None:
            hits = []
            for t in self.history:
                rec = self.record(t)
                for f, _, _ in rest + [(o, "", "") for o, _ in order]:
                    if f not in rec:
                        raise QueryError(f"unknown field {f!r}")
                if all(_holds(rec[f][0], op, v) for f, op, v in rest):
                    hits.append((tuple(rec[f][0] for f, _ in order), rec["sys_updated_on"][0], t.n))
            for i in reversed(range(len(order))):
                hits.sort(key=lambda h, i=i: h[0][i], reverse=order[i][1])
            ranked = self._matches[key] = [(updated, n) for _, updated, n in hits]
        if order[:1] == [("sys_updated_on", False)] and [op for _, op, _ in window] in ([">="], [">"]):
            # The keyset case: ordered by sys_updated_on, bounded below by it: bisect instead of a scan.
            bound = (window[0][2], -1 if window[0][1] == ">=" else 1 << 62)
            return [n for _, n in ranked[bisect.bisect_left(ranked, bound) :]]
        return [n for updated, n in ranked if all(_holds(updated, op, v) for _, op, v in window)]

    def _list(self, req: Recorded, m: re.Match[str]) -> Reply:
        if m["table"] != "incident" or not len(self.history):
            return super()._list(req, m)
        try:
            hits = self._query(req.param("sysparm_query") or "")
        except QueryError as exc:
            return Reply(400, self.error_body(400, f"Invalid query: {exc}"))
        offset, limit = int(req.param("sysparm_offset") or 0), int(req.param("sysparm_limit") or 10000)
        page = hits[offset : offset + limit]
        rows = [self._render(self.history[n], req) for n in page]
        return Reply(200, {"result": rows}, {"X-Total-Count": str(len(hits))})

    def _stats(self, req: Recorded, m: re.Match[str]) -> Reply:
        if m["table"] != "incident":
            return self._invalid_table(m["table"])
        try:
            hits = self._query(req.param("sysparm_query") or "")
        except QueryError as exc:
            return Reply(400, self.error_body(400, f"Invalid query: {exc}"))
        return Reply(200, {"result": {"stats": {"count": str(len(hits))}}})

    def _journal(self, req: Recorded, m: re.Match[str]) -> Reply:
        query = req.param("sysparm_query") or ""
        if "element_idIN" not in query:
            return super()._journal(req, m)
        try:
            conditions, order = parse_query(query)
        except QueryError as exc:
            return Reply(400, self.error_body(400, f"Invalid query: {exc}"))
        ids: set[str] = set()
        elements = {"comments", "work_notes"}
        for f, op, v in conditions:
            if f == "element_id" and op == "IN":
                ids = set(v.split(","))
            elif f == "element" and op in ("=", "IN"):
                elements = set(v.split(","))
            else:
                return Reply(400, self.error_body(400, f"Invalid query: this fake does not filter on {f}{op}"))
        rows = []
        for sys_id in ids:
            n = int(sys_id, 16) - 0xA0000000 if re.fullmatch(r"[0-9a-f]{32}", sys_id) else -1
            if not 0 <= n < len(self.history) or self.history[n].sys_id != sys_id:
                continue
            t = self.history[n]
            base = t.resolved_at - timedelta(hours=2)
            authors = {"reporter": f"customer.{t.n}", "agent": AGENT_USER, "bot": self.username, "system": "system"}
            for i, c in enumerate(t.comments):
                element = "comments" if c.public else "work_notes"
                if element in elements:
                    rows.append({"element": element, "element_id": sys_id, "name": "incident", "value": c.text,
                                 "sys_created_by": authors[c.role],
                                 "sys_created_on": sn_time(base + timedelta(minutes=i))})  # fmt: skip
        for field, desc in reversed(order):
            rows.sort(key=lambda r, f=field: (r.get(f, ""), r["element_id"]), reverse=desc)
        offset, limit = int(req.param("sysparm_offset") or 0), int(req.param("sysparm_limit") or 10000)
        fields = req.param("sysparm_fields")
        page = rows[offset : offset + limit]
        if fields:
            page = [{k: r.get(k, "") for k in fields.split(",")} for r in page]
        return Reply(200, {"result": page})
