"""A fake Jira Cloud + JSM over real HTTP: the endpoints the connector calls, with contract-shaped bodies.

Covers REST v3 (myself, issue GET/PUT, comments list/add, issue properties, priorities, components) and
the JSM servicedeskapi request comments. Basic auth is checked. Comments know whether they are public:
a platform comment is public unless it carries ``sd.public.comment = {"internal": true}``.
"""

from __future__ import annotations

import base64
import copy
import functools
import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes._jira_echo import ECHO_FIXTURE, comment_echo
from tests.fakes._jira_state import FakeComment, FakeIssue, adf_text
from tests.fakes._server import FakeServer, Recorded, Reply

__all__ = ["FakeComment", "FakeIssue", "FakeJira", "adf_text"]

SHARED = Path(os.environ.get("ITSM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
FIXTURES = SHARED / "contracts" / "fixtures"
BOT_ACCOUNT_ID = "62f0a1b2c3d4e5f607182930"
PRIORITIES = {"1": "Highest", "2": "High", "3": "Medium", "4": "Low", "5": "Lowest"}
DEFAULT_COMPONENTS = ("Network", "Hardware", "Software", "Access", "Email", "Technical Support")
ISSUE_PATH = r"/rest/api/3/issue/(?P<issue>[^/]+)"
JSM_PATH = r"/rest/servicedeskapi/request/(?P<issue>[^/]+)/comment"


@functools.cache
def _parsed(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _load(name: str) -> Any:
    """A contract fixture, parsed (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parsed(name))


class FakeJira(FakeServer):
    """Fake Jira Cloud site with one JSM project (ITSD); issue ITSD-42 (id 10231) exists from the fixtures."""

    name = "fake-jira"

    def __init__(
        self, *, email: str = "itsm-bot@acme.example", api_token: str = "test-jira-api-token", port: int = 0
    ) -> None:
        super().__init__(port=port)
        self.email, self.api_token = email, api_token
        self.auto_create_issues = False  # True: any unknown id/key springs into existence (benchmarks)
        self.components = list(DEFAULT_COMPONENTS)
        self.custom_field_options: dict[str, list[str]] = {}  # customfield id -> allowed option values
        self.on_comment: Callable[[FakeIssue, FakeComment], None] | None = None  # webhook echo hook
        self.issues: dict[str, FakeIssue] = {}
        self._ids = itertools.count(10409)
        self.add_issue("ITSD-42", "10231")
        for method, pattern, handler in [
            ("GET", r"/rest/api/3/myself", self._myself),
            ("GET", r"/rest/api/3/priority/search", self._priorities),
            ("GET", r"/rest/api/3/project/(?P<project>[^/]+)/components", self._components),
            ("GET", ISSUE_PATH, self._get_issue),
            ("PUT", ISSUE_PATH, self._edit_issue),
            ("GET", ISSUE_PATH + r"/comment", self._list_comments),
            ("POST", ISSUE_PATH + r"/comment", self._add_comment),
            ("GET", ISSUE_PATH + r"/properties/(?P<prop>[^/]+)", self._get_property),
            ("PUT", ISSUE_PATH + r"/properties/(?P<prop>[^/]+)", self._put_property),
            ("GET", JSM_PATH, self._jsm_list),
            ("POST", JSM_PATH, self._jsm_add),
        ]:
            self.route(method, pattern, handler)

    # -- test-facing API --

    def add_issue(self, key: str, issue_id: str) -> FakeIssue:
        """Create an issue reachable by key and by id."""
        issue = FakeIssue(id=issue_id, key=key)
        self.issues[key] = self.issues[issue_id] = issue
        return issue

    def issue(self, id_or_key: str) -> FakeIssue:
        """A stored issue by id or key."""
        return self.issues[id_or_key]

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A `jira` settings group pointing at this fake (pass as Settings(jira=...))."""
        return {"base_url": self.url, "email": self.email, "api_token": self.api_token, **overrides}

    def echo_comments_to(self, url: str, *, secret: str | None = None) -> list[int]:
        """Send a signed `comment_created` webhook to `url` for every new comment (T19); returns the statuses."""
        statuses: list[int] = []
        self.on_comment = comment_echo(url, secret=secret, statuses=statuses, template=FIXTURES / ECHO_FIXTURE)
        return statuses

    def authorized(self, req: Recorded) -> Reply | None:
        """Basic auth with the bot's email and API token."""
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        if req.headers.get("Authorization") != expected:
            return Reply(
                401,
                {"errorMessages": ["You are not authenticated. Authentication required to perform this operation."]},
            )
        return None

    def error_body(self, status: int, message: str) -> Any:
        """Jira's ErrorCollection."""
        if status == 429:
            return {"errorMessages": ["Rate limit exceeded"]}
        return {"errorMessages": [message], "errors": {}}

    # -- handlers --

    def _find(self, id_or_key: str) -> FakeIssue | None:
        """Look an issue up, creating it when auto-create is on."""
        if id_or_key not in self.issues and self.auto_create_issues:
            if id_or_key.isdigit():
                return self.add_issue(f"AUTO-{id_or_key}", id_or_key)
            return self.add_issue(id_or_key, str(20000 + len(self.issues)))
        return self.issues.get(id_or_key)

    def _missing(self) -> Reply:
        return Reply(404, _load("jira_error_404_issue.json"))

    def _myself(self, req: Recorded, m: re.Match[str]) -> Reply:
        return Reply(
            200,
            {
                "accountId": BOT_ACCOUNT_ID,
                "accountType": "atlassian",
                "emailAddress": self.email,
                "displayName": "ITSM Triage Bot",
                "active": True,
                "timeZone": "Europe/Berlin",
            },
        )

    def _priorities(self, req: Recorded, m: re.Match[str]) -> Reply:
        values = [{"id": i, "name": n, "self": f"{self.url}/rest/api/3/priority/{i}"} for i, n in PRIORITIES.items()]
        return Reply(200, {"startAt": 0, "maxResults": 50, "total": len(values), "isLast": True, "values": values})

    def _components(self, req: Recorded, m: re.Match[str]) -> Reply:
        return Reply(200, [{"id": str(10000 + i), "name": n} for i, n in enumerate(self.components)])

    def _get_issue(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return self._missing()
        fields = {
            "priority": issue.priority,
            "labels": issue.labels,
            "components": [{"name": c} for c in issue.components],
            **issue.custom,
        }
        return Reply(
            200,
            {
                "id": issue.id,
                "key": issue.key,
                "self": f"{self.url}/rest/api/3/issue/{issue.id}",
                "fields": fields,
            },
        )

    def _edit_issue(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return self._missing()
        body = req.json()
        fields, update = body.get("fields") or {}, body.get("update") or {}
        errors: dict[str, str] = {}
        for name in set(fields) & set(update):
            errors[name] = "Field can not be set in both 'fields' and 'update'."
        new_priority = None
        if "priority" in fields:
            p = fields["priority"]
            pid = p.get("id") or next((i for i, n in PRIORITIES.items() if n == p.get("name")), None)
            if pid not in PRIORITIES:
                errors["priority"] = "Specify the Priority (id or name) in the string format"
            new_priority = {"id": pid, "name": PRIORITIES.get(pid or "", "")}
        if "components" in fields:
            unknown = [c.get("name") for c in fields["components"] if c.get("name") not in self.components]
            if unknown:
                errors.update(_load("jira_error_400.json")["errors"])
        adds = [op["add"] for op in update.get("labels", []) if "add" in op]
        if any(not isinstance(a, str) or " " in a for a in adds):
            errors["labels"] = "The label must not contain spaces."
        for name, value in fields.items():
            if name.startswith("customfield_"):
                allowed = self.custom_field_options.get(name)
                if allowed is None or (value or {}).get("value") not in allowed:
                    errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
        if errors:
            return Reply(400, {"errorMessages": [], "errors": errors})
        if new_priority:
            issue.priority = new_priority
        if "components" in fields:
            issue.components = [c["name"] for c in fields["components"]]
        issue.labels += [a for a in adds if a not in issue.labels]
        issue.custom.update({k: v for k, v in fields.items() if k.startswith("customfield_")})
        return Reply(204)

    def _store_comment(self, issue: FakeIssue, comment: FakeComment) -> FakeComment:
        issue.comments.append(comment)
        if self.on_comment is not None:
            self.on_comment(issue, comment)
        return comment

    def _platform_json(self, issue: FakeIssue, c: FakeComment) -> dict[str, Any]:
        """A platform Comment as the fixture shows it."""
        out = copy.deepcopy(_load("jira_add_comment_response_201.json"))
        adf = c.adf or {
            "type": "doc",
            "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": c.text or ""}]}],
        }
        out.update(
            id=c.id,
            body=adf,
            jsdPublic=c.public,
            self=f"{self.url}/rest/api/3/issue/{issue.id}/comment/{c.id}",
        )
        out.pop("properties", None)  # not returned on read without expand
        return out

    def _list_comments(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return self._missing()
        start, size = int(req.param("startAt") or 0), min(int(req.param("maxResults") or 50), 100)
        page = issue.comments[start : start + size]
        return Reply(
            200,
            {
                "startAt": start,
                "maxResults": size,
                "total": len(issue.comments),
                "comments": [self._platform_json(issue, c) for c in page],
            },
        )

    def _add_comment(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return self._missing()
        body = req.json()
        adf = body.get("body")
        if not isinstance(adf, dict) or adf.get("type") != "doc" or adf.get("version") != 1:
            return Reply(400, {"errorMessages": ["Comment body is not valid Atlassian Document Format."], "errors": {}})
        props = body.get("properties") or []
        internal = any(
            p.get("key") == "sd.public.comment" and (p.get("value") or {}).get("internal") is True for p in props
        )
        c = self._store_comment(
            issue, FakeComment(str(next(self._ids)), not internal, "platform", adf=adf, properties=props)
        )
        out = self._platform_json(issue, c)
        out["properties"] = props
        return Reply(201, out)

    def _get_property(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None or m["prop"] not in issue.properties:
            return Reply(
                404,
                {"errorMessages": [f"The property with key '{m['prop']}' does not exist."], "errors": {}},
            )
        return Reply(200, {"key": m["prop"], "value": issue.properties[m["prop"]]})

    def _put_property(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return self._missing()
        existed = m["prop"] in issue.properties
        issue.properties[m["prop"]] = req.json()
        return Reply(200 if existed else 201)

    def _jsm_json(self, issue: FakeIssue, c: FakeComment) -> dict[str, Any]:
        """A JSM CommentDTO as the fixture shows it."""
        out = copy.deepcopy(_load("jsm_request_comment_response_201.json"))
        out.update(id=c.id, body=c.plain, public=c.public)
        out["_links"]["self"] = f"{self.url}/rest/servicedeskapi/request/{issue.id}/comment/{c.id}"
        out["author"].update(accountId=BOT_ACCOUNT_ID, displayName="ITSM Triage Bot", emailAddress=self.email)
        return out

    def _jsm_list(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return Reply(404, _load("jsm_error_404.json"))
        want_public = req.param("public") != "false"
        want_internal = req.param("internal") != "false"
        chosen = [c for c in issue.comments if (c.public and want_public) or (not c.public and want_internal)]
        start, limit = int(req.param("start") or 0), min(int(req.param("limit") or 50), 100)
        page = chosen[start : start + limit]
        return Reply(
            200,
            {
                "size": len(page),
                "start": start,
                "limit": limit,
                "isLastPage": start + limit >= len(chosen),
                "values": [self._jsm_json(issue, c) for c in page],
            },
        )

    def _jsm_add(self, req: Recorded, m: re.Match[str]) -> Reply:
        issue = self._find(m["issue"])
        if issue is None:
            return Reply(404, _load("jsm_error_404.json"))
        body = req.json()
        if (
            not isinstance(body.get("body"), str)
            or not body["body"].strip()
            or not isinstance(body.get("public"), bool)
        ):
            return Reply(
                400,
                {
                    "errorMessage": "body (string) and public (boolean) are required",
                    "i18nErrorMessage": {"i18nKey": "ILLUSTRATIVE.invalid", "parameters": []},
                },
            )
        c = self._store_comment(issue, FakeComment(str(next(self._ids)), body["public"], "jsm", text=body["body"]))
        return Reply(201, self._jsm_json(issue, c))
