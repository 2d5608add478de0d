"""Fake knowledge bases over real HTTP: ServiceNow `kb_knowledge` (Table API) and Confluence Cloud (REST API v2).

Records are built from the contract fixtures in `tests/fakes/contracts/knowledge/` (their keys and value shapes);
tests add, edit, unpublish and delete articles, and inject 429 / 5xx faults with the base server's `fail_next`.
The Table API fake honours what the connector sends: `sys_updated_on>=`, `workflow_state=`, `active=` conditions,
`ORDERBY` fields, `sysparm_fields`, `sysparm_limit` / `sysparm_offset`. The Confluence fake pages with an opaque
cursor in `_links.next` and the `Link` header.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.fakes._server import FakeServer, Recorded, Reply

CONTRACTS = Path(__file__).resolve().parent / "contracts" / "knowledge"


@functools.cache
def _parsed(name: str) -> Any:
    return json.loads((CONTRACTS / name).read_text())


def contract(name: str) -> Any:
    """A knowledge-base contract fixture, parsed (a fresh copy)."""
    return copy.deepcopy(_parsed(name))


class FakeServiceNowKnowledge(FakeServer):
    """kb_knowledge on a fake instance (basic auth)."""

    name = "fake-servicenow-kb"

    def __init__(self, *, username: str = "itsm.triage.bot", password: str = "test-sn-password", port: int = 0):
        super().__init__(port=port)
        self.username, self.password = username, password
        self.records: dict[str, dict[str, Any]] = {}
        self.query_faults: list[list[Any]] = []  # [substring of sysparm_query, status, times left]
        self._clock = 1_783_000_000  # fake sys_updated_on seconds; every write moves it forward
        self.route("GET", r"/api/now(?:/v[12])?/table/(?P<table>[^/]+)", self._list)

    # -- test-facing API --

    def settings(self, **kb: Any) -> dict[str, Any]:
        """Settings overrides ({'servicenow': ..., 'kb': ...}) pointing at this fake."""
        return {
            "servicenow": {"instance_url": self.url, "username": self.username, "password": self.password},
            "kb": {"servicenow_enabled": True, "backoff_base_s": 0.01, **kb},
        }

    def _tick(self) -> str:
        self._clock += 1
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._clock))

    def put(
        self,
        sys_id: str,
        *,
        number: str,
        title: str,
        html: str,
        language: str = "en",
        state: str = "published",
        same_second: bool = False,
    ) -> dict[str, Any]:
        """Create or edit an article (a copy of the fixture's published record with these values)."""
        with self._lock:
            record = self.records.get(sys_id) or contract("servicenow_kb_knowledge_list.json")["result"][0]
            mods = int(record.get("sys_mod_count") or 0) + 1 if sys_id in self.records else 0
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._clock)) if same_second else self._tick()
            record.update(sys_id=sys_id, number=number, short_description=title, text=html, language=language,
                          workflow_state=state, sys_updated_on=stamp, sys_mod_count=str(mods))  # fmt: skip
            self.records[sys_id] = record
            return record

    def set_state(self, sys_id: str, state: str) -> None:
        """Move an article through the workflow (published, retired, outdated, draft...)."""
        with self._lock:
            record = self.records[sys_id]
            record.update(workflow_state=state, sys_updated_on=self._tick(),
                          sys_mod_count=str(int(record["sys_mod_count"]) + 1))  # fmt: skip

    def delete(self, sys_id: str) -> None:
        """Hard-delete an article (no record is left to read)."""
        with self._lock:
            del self.records[sys_id]

    def fail_query(self, contains: str, status: int, *, times: int = 1) -> None:
        """Answer the next `times` reads whose sysparm_query contains `contains` with `status`."""
        with self._lock:
            self.query_faults.append([contains, status, times])

    def authorized(self, req: Recorded) -> Reply | None:
        """Basic auth of the integration user."""
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if req.headers.get("Authorization") == basic:
            return None
        return Reply(401, self.error_body(401, "User Not Authenticated"))

    def error_body(self, status: int, message: str) -> Any:
        """ServiceNow's error envelope."""
        return {"error": {"message": message, "detail": None}, "status": "failure"}

    # -- handler --

    def _list(self, req: Recorded, m: Any) -> Reply:
        if m["table"] != "kb_knowledge":
            return Reply(
                404, {"error": {"message": f"Invalid table {m['table']}", "detail": None}, "status": "failure"}
            )
        query = req.param("sysparm_query") or ""
        for fault in self.query_faults:
            if fault[2] > 0 and fault[0] in query:
                fault[2] -= 1
                return Reply(fault[1], self.error_body(fault[1], "injected fault"))
        rows = list(self.records.values())
        order: list[str] = []
        for cond in query.split("^"):
            if not cond:
                continue
            if cond.startswith("ORDERBY"):
                order.append(cond.removeprefix("ORDERBY"))
            elif ">=" in cond:
                key, value = cond.split(">=", 1)
                rows = [r for r in rows if str(r.get(key, "")) >= value]
            elif "=" in cond:
                key, value = cond.split("=", 1)
                rows = [r for r in rows if str(r.get(key, "")) == value]
            else:
                return Reply(400, self.error_body(400, f"Invalid query condition {cond}"))
        for key in reversed(order):
            rows.sort(key=lambda r, key=key: str(r.get(key, "")))
        offset = int(req.param("sysparm_offset") or 0)
        limit = int(req.param("sysparm_limit") or 10000)
        page = rows[offset : offset + limit]
        fields = req.param("sysparm_fields")
        if fields:
            page = [{k: r.get(k, "") for k in fields.split(",")} for r in page]
        return Reply(200, {"result": copy.deepcopy(page)}, {"X-Total-Count": str(len(rows))})


@dataclass
class FakePage:
    """A Confluence page: its v2 representation without the body, and the body's storage value."""

    record: dict[str, Any]
    body: str
    space_key: str = "IT"
    history: list[int] = field(default_factory=list)


class FakeConfluence(FakeServer):
    """A Confluence Cloud site with spaces and pages (basic auth with e-mail + API token)."""

    name = "fake-confluence"

    def __init__(self, *, email: str = "bot@acme.example", token: str = "test-confluence-token", port: int = 0):
        super().__init__(port=port)
        self.email, self.token = email, token
        self.spaces: dict[str, dict[str, Any]] = {}
        self.pages: dict[str, FakePage] = {}
        self.page_size_cap = 250
        self.add_space("IT")
        self.route("GET", r"/wiki/api/v2/spaces", self._spaces)
        self.route("GET", r"/wiki/api/v2/spaces/(?P<space_id>\d+)/pages", self._space_pages)
        self.route("GET", r"/wiki/api/v2/pages", self._pages)

    # -- test-facing API --

    def settings(self, spaces: list[str] | None = None, **kb: Any) -> dict[str, Any]:
        """Settings overrides ({'kb': ...}) pointing at this fake."""
        return {
            "kb": {
                "confluence_url": self.url,
                "confluence_email": self.email,
                "confluence_api_token": self.token,
                "confluence_spaces": spaces or ["IT"],
                "backoff_base_s": 0.01,
                **kb,
            }
        }

    def add_space(self, key: str) -> dict[str, Any]:
        """Create a space (a copy of the fixture's space with this key)."""
        with self._lock:
            space = contract("confluence_spaces.json")["results"][0]
            space.update(id=str(98306 + len(self.spaces)), key=key, name=f"{key} space")
            space["_links"]["webui"] = f"/spaces/{key}"
            self.spaces[key] = space
            return space

    def put(self, page_id: str, *, title: str, html: str, space: str = "IT") -> FakePage:
        """Create a page or publish a new version of it."""
        with self._lock:
            existing = self.pages.get(page_id)
            record = existing.record if existing else contract("confluence_space_pages.json")["results"][0]
            number = int(record["version"]["number"]) + 1 if existing else 1
            slug = title.replace(" ", "+")
            record.update(id=page_id, title=title, status="current", spaceId=self.spaces[space]["id"])
            record["version"] = {**record["version"], "number": number,
                                 "createdAt": f"2026-07-{10 + number:02d}T09:00:00.000Z"}  # fmt: skip
            record["_links"] = {**record["_links"], "webui": f"/spaces/{space}/pages/{page_id}/{slug}"}
            page = FakePage(record=record, body=html, space_key=space)
            self.pages[page_id] = page
            return page

    def set_status(self, page_id: str, status: str) -> None:
        """Archive, trash or draft a page."""
        with self._lock:
            self.pages[page_id].record["status"] = status

    def delete(self, page_id: str) -> None:
        """Purge a page."""
        with self._lock:
            del self.pages[page_id]

    def authorized(self, req: Recorded) -> Reply | None:
        """Basic auth with the account's e-mail and API token."""
        basic = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if req.headers.get("Authorization") == basic:
            return None
        return Reply(401, contract("confluence_error_401.json"))

    def error_body(self, status: int, message: str) -> Any:
        """The v2 error envelope."""
        if status == 429:
            return contract("confluence_error_429.json")
        return {"errors": [{"status": status, "code": "ERROR", "title": message, "detail": None}]}

    # -- handlers --

    def _base_links(self) -> dict[str, str]:
        return {"base": f"{self.url}/wiki"}

    def _paged(self, req: Recorded, items: list[dict[str, Any]], path: str) -> Reply:
        """One page of `items` from the cursor; `next` repeats every parameter but the cursor."""
        limit = min(int(req.param("limit") or 25), self.page_size_cap)
        start = int(base64.urlsafe_b64decode((req.param("cursor") or "MA==").encode()).decode() or 0)
        chunk = items[start : start + limit]
        links = self._base_links()
        headers: dict[str, str] = {}
        if start + limit < len(items):
            params = [(k, v) for k, vs in req.query.items() if k != "cursor" for v in vs]
            cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            links["next"] = f"{path}?{urlencode([*params, ('cursor', cursor)])}"
            headers["Link"] = f'<{links["next"]}>; rel="next", <{links["base"]}>; rel="base"'
        return Reply(200, {"results": chunk, "_links": links}, headers)

    def _spaces(self, req: Recorded, m: Any) -> Reply:
        keys = {k for v in req.query.get("keys", []) for k in v.split(",") if k}
        spaces = [s for key, s in sorted(self.spaces.items()) if not keys or key in keys]
        return self._paged(req, copy.deepcopy(spaces), req.path)

    def _render(self, page: FakePage, body_format: str | None) -> dict[str, Any]:
        out = copy.deepcopy(page.record)
        if body_format == "storage":
            out["body"] = {"storage": {"representation": "storage", "value": page.body}}
        return out

    def _space_pages(self, req: Recorded, m: Any) -> Reply:
        if not any(s["id"] == m["space_id"] for s in self.spaces.values()):
            return Reply(404, contract("confluence_error_404.json"))
        status = req.param("status")
        pages = [
            self._render(p, req.param("body-format"))
            for _, p in sorted(self.pages.items(), key=lambda kv: int(kv[0]))
            if p.record["spaceId"] == m["space_id"] and (status is None or p.record["status"] == status)
        ]
        return self._paged(req, pages, req.path)

    def _pages(self, req: Recorded, m: Any) -> Reply:
        ids = [i for v in req.query.get("id", []) for i in v.split(",") if i]
        pages = [self._render(self.pages[i], req.param("body-format")) for i in ids if i in self.pages]
        return self._paged(req, pages, req.path)
