"""A fake ServiceNow instance over real HTTP: Table API incidents, journals and the OAuth token endpoint.

Incidents are seeded from the contract fixture (INC0010042). PATCH/PUT append `work_notes` / `comments` to a
journal (as ServiceNow does: never overwrite), bump `sys_mod_count`, and recompute `priority` from
impact x urgency (a written priority is recorded but ignored, like the Priority Lookup Rules would).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.fakes._server import FakeServer, Recorded, Reply

SHARED = Path(os.environ.get("ITSM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
FIXTURES = SHARED / "contracts" / "fixtures"
SEED_SYS_ID = "9d385017c611228701d22104cc95c371"
PRIORITY_MATRIX = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("1", "3"): "3",
    ("2", "1"): "2",
    ("2", "2"): "3",
    ("2", "3"): "4",
    ("3", "1"): "3",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
JOURNALS = {"work_notes": "Work notes", "comments": "Additional comments"}


@functools.cache
def _parsed(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _load(name: str) -> Any:
    """A contract fixture, parsed (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parsed(name))


@dataclass
class JournalEntry:
    """One sys_journal_field row."""

    element: str  # "work_notes" | "comments"
    value: str
    created_by: str
    created_on: str


@dataclass
class FakeIncident:
    """A stored incident record (string values, as the Table API returns them) and its journal."""

    record: dict[str, Any]
    journal: list[JournalEntry] = field(default_factory=list)
    priority_writes: list[str] = field(default_factory=list)  # what callers tried to write into `priority`

    def entries(self, element: str) -> list[str]:
        """Texts of one journal field, oldest first."""
        return [e.value for e in self.journal if e.element == element]

    @property
    def work_notes(self) -> list[str]:
        return self.entries("work_notes")

    @property
    def comments(self) -> list[str]:
        return self.entries("comments")


class FakeServiceNow(FakeServer):
    """Fake ServiceNow instance; basic auth, or bearer tokens from /oauth_token.do."""

    name = "fake-servicenow"

    def __init__(
        self,
        *,
        username: str = "itsm.triage.bot",
        password: str = "test-sn-password",
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.username, self.password = username, password
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.auto_create_incidents = False
        self.journal_in_display_value = True  # False: GET ...?sysparm_display_value=true shows no journal text
        self.incidents: dict[str, FakeIncident] = {}
        self.add_incident(SEED_SYS_ID, number="INC0010042")
        table = r"/api/now(?:/v[12])?/table/(?P<table>[^/]+)"
        self.route("POST", r"/oauth_token\.do", self._token)
        self.route("GET", r"/api/now(?:/v[12])?/table/sys_journal_field", self._journal)
        self.route("GET", table, self._list)
        self.route("GET", table + r"/(?P<sys_id>[^/]+)", self._get)
        self.route("PATCH", table + r"/(?P<sys_id>[^/]+)", self._update)
        self.route("PUT", table + r"/(?P<sys_id>[^/]+)", self._update)

    # -- test-facing API --

    def add_incident(self, sys_id: str, *, number: str | None = None) -> FakeIncident:
        """Create an incident (a copy of the fixture record with a new sys_id/number)."""
        record = copy.deepcopy(_load("servicenow_table_get_incident.json")["result"])
        record.update(sys_id=sys_id, number=number or f"INC{len(self.incidents) + 10042:07d}")
        incident = FakeIncident(record)
        self.incidents[sys_id] = incident
        return incident

    def incident(self, sys_id: str) -> FakeIncident:
        """A stored incident."""
        return self.incidents[sys_id]

    def settings(self, *, oauth: bool = False, **overrides: Any) -> dict[str, Any]:
        """A `servicenow` settings group pointing at this fake (pass as Settings(servicenow=...))."""
        group: dict[str, Any] = {
            "instance_url": self.url,
            "username": self.username,
            "password": self.password,
        }
        if oauth:
            group.update(oauth_client_id=self.client_id, oauth_client_secret=self.client_secret)
        return {**group, **overrides}

    def expire_tokens(self) -> None:
        """Invalidate every issued OAuth token (the next call gets 401 and must refresh)."""
        with self._lock:
            self.tokens.clear()

    def authorized(self, req: Recorded) -> Reply | None:
        """Basic auth for the integration user, or a bearer token we issued; the token endpoint is open."""
        if req.path == "/oauth_token.do":
            return None
        header = req.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if header == basic or (header.startswith("Bearer ") and header[7:] in self.tokens):
            return None
        return Reply(401, _load("servicenow_error_401.json"))

    def error_body(self, status: int, message: str) -> Any:
        """ServiceNow's error envelope."""
        return {"error": {"message": message, "detail": None}, "status": "failure"}

    # -- handlers --

    def _token(self, req: Recorded, m: re.Match[str]) -> Reply:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        ok = (
            form.get("grant_type") == "password"
            and form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
            and form.get("username") == self.username
            and form.get("password") == self.password
        )
        if not ok:
            return Reply(401, {"error_description": "access_denied", "error": "server_error"})
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Reply(
            200,
            {
                "access_token": token,
                "refresh_token": secrets.token_urlsafe(24),
                "scope": "useraccount",
                "token_type": "Bearer",
                "expires_in": 1799,
            },
        )

    def _invalid_table(self, table: str) -> Reply:
        """404 for any table but incident (the fixture's shape, with this table's name)."""
        body = _load("servicenow_error_404_invalid_table.json")
        body["error"]["message"] = f"Invalid table {table}"
        return Reply(404, body)

    def _find(self, table: str, sys_id: str) -> FakeIncident | Reply:
        if table != "incident":
            return self._invalid_table(table)
        if sys_id not in self.incidents:
            if not self.auto_create_incidents:
                return Reply(404, _load("servicenow_error_404_no_record.json"))
            self.add_incident(sys_id)
        return self.incidents[sys_id]

    def _render(self, inc: FakeIncident, req: Recorded) -> dict[str, Any]:
        """The record as the Table API returns it for this request's sysparm_* options."""
        display = (req.param("sysparm_display_value") or "false").lower()
        out: dict[str, Any] = copy.deepcopy(inc.record)
        for element, label in JOURNALS.items():
            entries = [e for e in reversed(inc.journal) if e.element == element]
            text = "".join(f"{e.created_on} - {e.created_by} ({label})\n{e.value}\n\n" for e in entries)
            text = text if self.journal_in_display_value else ""
            out[element] = (
                {"display_value": text, "value": ""} if display == "all" else (text if display == "true" else "")
            )
        if display == "all":
            out = {k: v if isinstance(v, dict) else {"display_value": v, "value": v} for k, v in out.items()}
        if req.param("sysparm_exclude_reference_link") == "true":
            out = {
                k: {kk: vv for kk, vv in v.items() if kk != "link"} if isinstance(v, dict) else v
                for k, v in out.items()
            }
        fields = req.param("sysparm_fields")
        if fields:
            out = {k: out.get(k, "") for k in fields.split(",")}
        return out

    def _get(self, req: Recorded, m: re.Match[str]) -> Reply:
        found = self._find(m["table"], m["sys_id"])
        if isinstance(found, Reply):
            return found
        return Reply(200, {"result": self._render(found, req)})

    def _list(self, req: Recorded, m: re.Match[str]) -> Reply:
        if m["table"] != "incident":
            return self._invalid_table(m["table"])
        query = req.param("sysparm_query") or ""
        conditions = dict(c.split("=", 1) for c in query.split("^") if "=" in c)
        rows = [i for i in self.incidents.values() if all(str(i.record.get(k)) == v for k, v in conditions.items())]
        limit = int(req.param("sysparm_limit") or 10000)
        result = [self._render(i, req) for i in rows[:limit]]
        return Reply(200, {"result": result}, {"X-Total-Count": str(len(rows))})

    def _journal(self, req: Recorded, m: re.Match[str]) -> Reply:
        """sys_journal_field rows matching element_id=, elementIN and valueLIKE (^OR) conditions."""
        element_id, elements, likes = None, set(JOURNALS), []
        for cond in (req.param("sysparm_query") or "").split("^"):
            cond = cond.removeprefix("OR")
            if cond.startswith("element_id="):
                element_id = cond.split("=", 1)[1]
            elif cond.startswith("elementIN"):
                elements = set(cond.removeprefix("elementIN").split(","))
            elif cond.startswith("valueLIKE"):
                likes.append(cond.removeprefix("valueLIKE"))
        inc = self.incidents.get(element_id or "")
        entries = [e for e in (inc.journal if inc else []) if e.element in elements]
        entries = [e for e in entries if not likes or any(like in e.value for like in likes)]
        limit = int(req.param("sysparm_limit") or 10000)
        rows = [{"element": e.element, "value": e.value, "element_id": element_id, "name": "incident",
                 "sys_created_by": e.created_by, "sys_created_on": e.created_on} for e in entries[:limit]]  # fmt: skip
        return Reply(200, {"result": rows})

    def _update(self, req: Recorded, m: re.Match[str]) -> Reply:
        found = self._find(m["table"], m["sys_id"])
        if isinstance(found, Reply):
            return found
        try:
            body = req.json()
        except ValueError:
            return Reply(
                400,
                {
                    "error": {"message": "Exception while reading request", "detail": "Invalid JSON"},
                    "status": "failure",
                },
            )
        if not isinstance(body, dict):
            return Reply(
                400,
                {
                    "error": {"message": "Exception while reading request", "detail": "Not an object"},
                    "status": "failure",
                },
            )
        inc = found
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        for key, value in body.items():
            if key in JOURNALS:
                if str(value).strip():
                    inc.journal.append(JournalEntry(key, str(value), self.username, now))
            elif key == "priority":
                inc.priority_writes.append(str(value))
            else:
                inc.record[key] = value if isinstance(value, str) else json.dumps(value)
        rec = inc.record
        rec["priority"] = PRIORITY_MATRIX.get((str(rec.get("impact")), str(rec.get("urgency"))), rec.get("priority"))
        rec["sys_mod_count"] = str(int(rec.get("sys_mod_count") or 0) + 1)
        rec.update(sys_updated_by=self.username, sys_updated_on=now)
        return Reply(200, {"result": self._render(inc, req)})
