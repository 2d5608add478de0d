"""The fake Jira with a ticket history: the enhanced JQL search, the approximate count, the field list, and the
comments of resolved issues (JSM servicedeskapi and platform), shaped after the contract spec and fixtures.

* ``POST /rest/api/3/search/jql`` (SearchAndReconcileRequestBean -> SearchAndReconcileResults): a small JQL
  subset (AND, parentheses, =, !=, >=, <=, >, <, in, not in over statusCategory, resolved, project, resolution,
  priority, component), ``ORDER BY``, ``fields`` selection and opaque ``nextPageToken`` paging. Pages hold at
  most ``page_cap`` issues whatever ``maxResults`` asks ("API may return fewer items per page").
* ``POST /rest/api/3/search/approximate-count``, ``GET /rest/api/3/field`` (with the JSM request-type field).
* Comments of history issues through ``GET /rest/servicedeskapi/request/{key}/comment`` (CommentDTO, public /
  internal filters) and ``GET /rest/api/3/issue/{key}/comment``; projects in ``platform_projects`` are not
  service desks (the JSM call answers 404 there, as JSM does for an issue that is not a request).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.fakes._server import Recorded, Reply
from tests.fakes.fake_jira import BOT_ACCOUNT_ID, FakeJira, _load
from tests.fakes.history_corpus import PastComment, PastTicket, PastTickets

SITE_TZ = timezone(timedelta(hours=1))  # the bot user's profile zone: timestamps and JQL dates are in it
AGENT = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Alex Agent", "accountType": "atlassian"}
AUTOMATION = {"accountId": "557058:fake-automation", "displayName": "Automation for Jira", "accountType": "app"}
BOT = {"accountId": BOT_ACCOUNT_ID, "displayName": "ITSM Triage Bot", "accountType": "atlassian"}
PRIORITY_NAMES = {"P1": ("1", "Highest"), "P2": ("2", "High"), "P3": ("3", "Medium"), "P4": ("4", "Low")}
REQUEST_TYPE_FIELD = "customfield_10010"
FIELDS = [
    {"id": "summary", "name": "Summary", "custom": False, "schema": {"type": "string", "system": "summary"}},
    {"id": "description", "name": "Description", "custom": False, "schema": {"type": "string"}},
    {"id": "components", "name": "Components", "custom": False, "schema": {"type": "array", "items": "component"}},
    {"id": "priority", "name": "Priority", "custom": False, "schema": {"type": "priority", "system": "priority"}},
    {
        "id": REQUEST_TYPE_FIELD,
        "name": "Request Type",
        "custom": True,
        "schema": {"type": "sd-customerrequesttype", "custom": "com.atlassian.servicedesk:vp-origin"},
    },
]
_TOKEN = re.compile(r"""\s*(\(|\)|,|>=|<=|!=|=|>|<|"[^"]*"|'[^']*'|[^\s(),=<>!"']+)""")


class JqlError(ValueError):
    """A query the fake (and Jira) cannot run."""


def jira_time(when: datetime) -> str:
    """2026-07-14T10:14:03.000+0100, as Jira writes timestamps."""
    return when.astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M:%S.000%z")


def adf(text: str) -> dict[str, Any]:
    """ADF for plain text: a paragraph per blank-line block, hard breaks for single newlines."""
    content = []
    for block in text.split("\n\n"):
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(block.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            if line:
                nodes.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


def _date(value: str, now: datetime) -> datetime:
    """A JQL date: -Nd / -Nh relative to now, or "yyyy-MM-dd[ HH:mm]" in the site's zone."""
    m = re.fullmatch(r"-(\d+)([dhwm])", value)
    if m:
        unit = {"d": "days", "h": "hours", "w": "weeks", "m": "minutes"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    for fmt in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=SITE_TZ)
        except ValueError:
            continue
    raise JqlError(f"Date value '{value}' for field 'resolved' is invalid.")


class Jql:
    """A parsed JQL subset: a predicate over PastTicket and an ORDER BY."""

    FIELDS = ("statuscategory", "resolved", "resolutiondate", "project", "resolution", "priority", "component")

    def __init__(self, text: str, now: datetime) -> None:
        self.now = now
        parts = re.split(r"(?i)\border\s+by\b", text, maxsplit=1)
        head, order = parts[0], parts[1] if len(parts) > 1 else ""
        self.order = [o.strip().split() for o in order.split(",") if o.strip()]
        for o in self.order:
            if o[0].lower() not in ("resolved", "key", "resolutiondate") or len(o) > 2:
                raise JqlError(f"Error in the JQL Query: cannot order by '{' '.join(o)}'.")
        self.tokens = [t for t in _TOKEN.findall(head) if t]
        self.pos = 0
        self.test = self._and() if self.tokens else (lambda t: True)
        if self.pos != len(self.tokens):
            raise JqlError(f"Error in the JQL Query: Expecting 'AND' but got '{self.tokens[self.pos]}'.")

    def _next(self) -> str:
        if self.pos >= len(self.tokens):
            raise JqlError("Error in the JQL Query: the query ends too early.")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _and(self) -> Any:
        parts = [self._term()]
        while self.pos < len(self.tokens) and self.tokens[self.pos].upper() == "AND":
            self.pos += 1
            parts.append(self._term())
        if self.pos < len(self.tokens) and self.tokens[self.pos].upper() == "OR":
            raise JqlError("Error in the JQL Query: OR is not supported by this fake.")
        return lambda t: all(p(t) for p in parts)

    def _term(self) -> Any:
        if self.tokens[self.pos] == "(":
            self.pos += 1
            inner = self._and()
            if self._next() != ")":
                raise JqlError("Error in the JQL Query: Expecting ')'.")
            return inner
        name = self._next().lower()
        if name not in self.FIELDS:
            raise JqlError(f"Field '{name}' does not exist or you do not have permission to view it.")
        op = self._next().lower()
        if op == "not":
            op = "not " + self._next().lower()
        if op in ("in", "not in"):
            if self._next() != "(":
                raise JqlError("Error in the JQL Query: Expecting '(' after IN.")
            values = []
            while True:
                values.append(self._next().strip("\"'"))
                sep = self._next()
                if sep == ")":
                    break
                if sep != ",":
                    raise JqlError("Error in the JQL Query: Expecting ',' or ')'.")
            wanted = {v.lower() for v in values}
            return lambda t: (self._value(name, t).lower() in wanted) == (op == "in")
        value = self._next().strip("\"'")
        if name in ("resolved", "resolutiondate"):
            bound = _date(value, self.now)
            return lambda t: _compare(t.resolved_at, op, bound)
        return lambda t: _compare(self._value(name, t).lower(), op, value.lower())

    @staticmethod
    def _value(name: str, t: PastTicket) -> str:
        if name == "statuscategory":
            return "Done"
        if name == "project":
            return t.project
        if name == "resolution":
            return t.resolution
        if name == "priority":
            return PRIORITY_NAMES.get(t.priority, ("3", t.priority))[1]
        return t.queue  # component

    def sort_key(self, t: PastTicket) -> tuple[Any, ...]:
        """Ascending key for ORDER BY (DESC negates the ticket's position)."""
        key: list[Any] = []
        for o in self.order or [["key"]]:
            desc = len(o) > 1 and o[1].upper() == "DESC"
            value = t.resolved_at.timestamp() if o[0].lower() != "key" else (t.project, t.n)
            if desc:
                value = -value if isinstance(value, float) else (value[0], -value[1])
            key.append(value)
        return tuple(key)


def _compare(a: Any, op: str, b: Any) -> bool:
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == ">=":
        return bool(a >= b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    if op == "<":
        return bool(a < b)
    raise JqlError(f"Error in the JQL Query: unknown operator '{op}'.")


class HistoryJira(FakeJira):
    """FakeJira plus `tickets` resolved issues (project SD) that the history import reads."""

    name = "fake-jira-history"

    def __init__(self, *, tickets: int = 0, page_cap: int = 100, **kw: Any) -> None:
        super().__init__(**kw)
        self.history = PastTickets(tickets)
        self.page_cap = page_cap
        self.platform_projects: set[str] = set()
        self.deleted: set[str] = set()  # keys found by the search whose comments then answer 404 (deleted since)
        self.token_generation = 0  # bump to expire every page token handed out
        self._matches: dict[str, list[int]] = {}
        self.route("POST", r"/rest/api/3/search/jql", self._search)
        self.route("POST", r"/rest/api/3/search/approximate-count", self._count)
        self.route("GET", r"/rest/api/3/field", self._field_list)
        self.route("GET", r"/rest/api/3/user", self._user)

    # -- test-facing API --

    def expire_page_tokens(self) -> None:
        """Every nextPageToken handed out so far is now invalid (they live 7 days on a real site)."""
        with self._lock:
            self.token_generation += 1

    def past(self, id_or_key: str) -> PastTicket | None:
        """The history ticket with this key or id, if any."""
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)-(\d+)", id_or_key)
        n = int(m.group(2)) - 1 if m else (int(id_or_key) - 200_000 if id_or_key.isdigit() else -1)
        if 0 <= n < len(self.history):
            t = self.history[n]
            if id_or_key in (t.key, t.issue_id):
                return t
        return None

    # -- search --

    def _query(self, jql: str) -> tuple[Jql, list[int]]:
        parsed = Jql(jql, datetime.now(UTC))
        cached = self._matches.get(jql)
        if cached is None:
            hits = [t for t in self.history if parsed.test(t)]
            hits.sort(key=parsed.sort_key)
            cached = self._matches[jql] = [t.n for t in hits]
        return parsed, cached

    def _body(self, req: Recorded) -> dict[str, Any] | Reply:
        try:
            body = req.json()
        except ValueError:
            return Reply(400, {"errorMessages": ["Unexpected character in the request body."], "errors": {}})
        if not isinstance(body, dict) or not isinstance(body.get("jql"), str):
            return Reply(400, {"errorMessages": ["The 'jql' field is required."], "errors": {}})
        return body

    def _search(self, req: Recorded, m: re.Match[str]) -> Reply:
        body = self._body(req)
        if isinstance(body, Reply):
            return body
        jql = body["jql"]
        try:
            _, hits = self._query(jql)
        except JqlError as exc:
            return Reply(400, {"errorMessages": [str(exc)], "errors": {}})
        start: int | None = 0
        token = body.get("nextPageToken")
        if token is not None:
            start = self._offset(token, jql)
        if start is None:
            return Reply(400, {"errorMessages": ["The provided next page token is invalid or expired."]})
        size = max(1, min(int(body.get("maxResults") or 50), self.page_cap, 5000))
        page = hits[start : start + size]
        wanted = body.get("fields") or ["id"]
        out: dict[str, Any] = {"issues": [self._issue(self.history[n], wanted) for n in page]}
        last = start + len(page) >= len(hits)
        out["isLast"] = last
        if not last:
            out["nextPageToken"] = self._token(jql, start + len(page))
        return Reply(200, out)

    def _token(self, jql: str, offset: int) -> str:
        raw = json.dumps({"q": hashlib.sha1(jql.encode()).hexdigest()[:12], "o": offset, "g": self.token_generation})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _offset(self, token: Any, jql: str) -> int | None:
        try:
            data = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        except ValueError:
            return None
        same = data.get("q") == hashlib.sha1(jql.encode()).hexdigest()[:12] and data.get("g") == self.token_generation
        return int(data["o"]) if same else None

    def _count(self, req: Recorded, m: re.Match[str]) -> Reply:
        body = self._body(req)
        if isinstance(body, Reply):
            return body
        try:
            _, hits = self._query(body["jql"])
        except JqlError as exc:
            return Reply(400, {"errorMessages": [str(exc)], "errors": {}})
        return Reply(200, {"count": len(hits)})

    def _user(self, req: Recorded, m: re.Match[str]) -> Reply:
        """GET /rest/api/3/user?accountId=: the User with its accountType."""
        account = req.param("accountId") or ""
        for known in (AGENT, AUTOMATION, BOT):
            if known["accountId"] == account:
                return Reply(200, {**known, "active": True, "self": f"{self.url}/rest/api/3/user?accountId={account}"})
        if re.fullmatch(r"qm:\d{8}-customer", account):
            return Reply(200, {"accountId": account, "accountType": "customer", "active": True})
        return Reply(404, {"errorMessages": ["Specified user does not exist or you do not have required permissions"]})

    def _field_list(self, req: Recorded, m: re.Match[str]) -> Reply:
        return Reply(200, copy.deepcopy(FIELDS))

    def _issue(self, t: PastTicket, wanted: list[str]) -> dict[str, Any]:
        """An IssueBean with the requested fields."""
        pid, pname = PRIORITY_NAMES.get(t.priority, ("5", "Lowest"))
        fields: dict[str, Any] = {
            "summary": t.subject,
            "description": adf(t.body) if t.body else None,
            "priority": {"id": pid, "name": pname, "self": f"{self.url}/rest/api/3/priority/{pid}"},
            "components": [{"id": str(10000 + len(t.queue)), "name": t.queue}] if t.queue else [],
            "labels": ["ai-triaged"] if t.n % 6 == 0 else [],
            "status": {"name": "Closed", "statusCategory": {"id": 3, "key": "done", "name": "Done"}},
            "resolution": {"id": "10000" if t.resolution == "Done" else "10002", "name": t.resolution},
            "resolutiondate": jira_time(t.resolved_at),
            "created": jira_time(t.resolved_at - timedelta(hours=3)),
            "reporter": self._reporter(t),
            "project": {"id": "10002", "key": t.project, "name": "Service Desk", "projectTypeKey": "service_desk"},
            "issuetype": {"id": "10004", "name": "[System] Incident", "subtask": False},
            REQUEST_TYPE_FIELD: {"requestType": {"id": "10", "name": t.category.replace("_", " ").title()}},
        }
        everything = {"*all", "*navigable"} & set(wanted)
        chosen = fields if everything else {k: fields[k] for k in wanted if k in fields}
        return {"id": t.issue_id, "key": t.key, "self": f"{self.url}/rest/api/3/issue/{t.issue_id}", "fields": chosen}

    @staticmethod
    def _reporter(t: PastTicket) -> dict[str, Any]:
        return {"accountId": f"qm:{t.n:08d}-customer", "displayName": f"Customer {t.n}", "accountType": "customer"}

    def _author(self, t: PastTicket, c: PastComment) -> dict[str, Any]:
        return {"reporter": self._reporter(t), "agent": AGENT, "bot": BOT, "system": AUTOMATION}[c.role]

    # -- comments of history issues (other issues: FakeJira's own handlers) --

    def _comments_of(self, t: PastTicket) -> list[tuple[str, int, PastComment]]:
        """(id, created epoch ms, comment), oldest first, ending before the resolution."""
        base = int((t.resolved_at - timedelta(hours=2)).timestamp() * 1000)
        return [(f"{t.issue_id}{i:02d}", base + i * 60_000, c) for i, c in enumerate(t.comments)]

    def _jsm_list(self, req: Recorded, m: re.Match[str]) -> Reply:
        t = self.past(m["issue"])
        if t is None:
            return super()._jsm_list(req, m)
        if t.project in self.platform_projects or t.key in self.deleted:
            return Reply(404, _load("jsm_error_404.json"))
        want_public = req.param("public") != "false"
        want_internal = req.param("internal") != "false"
        chosen = [x for x in self._comments_of(t) if (want_public if x[2].public else want_internal)]
        start, limit = int(req.param("start") or 0), min(int(req.param("limit") or 50), 100)
        page = chosen[start : start + limit]
        values = []
        for cid, ms, c in page:
            author = {k: v for k, v in self._author(t, c).items() if k != "accountType"}  # UserDTO has none
            when = datetime.fromtimestamp(ms / 1000, SITE_TZ)
            values.append(
                {
                    "id": cid,
                    "body": c.text,
                    "public": c.public,
                    "author": {**author, "active": True, "timeZone": "Europe/Berlin"},
                    "created": {
                        "iso8601": when.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "jira": jira_time(when),
                        "friendly": when.strftime("%d/%b/%y %I:%M %p"),
                        "epochMillis": ms,
                    },
                    "_links": {"self": f"{self.url}/rest/servicedeskapi/request/{t.issue_id}/comment/{cid}"},
                }
            )
        return Reply(
            200,
            {"size": len(values), "start": start, "limit": limit, "isLastPage": start + limit >= len(chosen),
             "values": values},
        )  # fmt: skip

    def _list_comments(self, req: Recorded, m: re.Match[str]) -> Reply:
        t = self.past(m["issue"])
        if t is None:
            return super()._list_comments(req, m)
        if t.key in self.deleted:
            return self._missing()
        thread = self._comments_of(t)
        start, size = int(req.param("startAt") or 0), min(int(req.param("maxResults") or 50), 100)
        comments = [
            {
                "id": cid,
                "author": self._author(t, c),
                "body": adf(c.text),
                "created": jira_time(datetime.fromtimestamp(ms / 1000, UTC)),
                "jsdPublic": c.public,
                "self": f"{self.url}/rest/api/3/issue/{t.issue_id}/comment/{cid}",
            }
            for cid, ms, c in thread[start : start + size]
        ]
        return Reply(200, {"startAt": start, "maxResults": size, "total": len(thread), "comments": comments})
