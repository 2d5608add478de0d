"""Resolved Jira / JSM issues through the enhanced JQL search (`POST /rest/api/3/search/jql`, nextPageToken paging).

The first public agent reply comes from the JSM request comments (`servicedeskapi`), skipping internal comments,
the reporter's own and the service's (its account, or the write-back marker line); an issue that is not a JSM
request falls back to the platform comments. Comments of one page are fetched by a few threads at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, timedelta
from typing import Any

import httpx
import structlog

from service.connectors._http import HttpCaller, json_body
from service.connectors.jira import TRIAGED_LABEL, jira_error_message
from service.domain.errors import PermanentUpstream
from service.domain.render import MARKER_PREFIX
from service.history.records import HistoryError, HistoryTicket, Page, first_value, inverse
from service.history.retry import RetryingReader
from service.settings import JiraSettings
from service.webhooks.common import parse_time
from service.webhooks.markup import to_text

log = structlog.get_logger(__name__)

SEARCH = "/rest/api/3/search/jql"
COUNT = "/rest/api/3/search/approximate-count"
DEFAULT_CONDITION = "statusCategory = Done"
DEFAULT_WINDOW = "resolved >= -365d"
ORDER = " ORDER BY resolved ASC, key ASC"
REQUEST_TYPE = "request_type"
REQUEST_TYPE_SCHEMA = "com.atlassian.servicedesk:vp-origin"
BASE_FIELDS = (
    "summary",
    "description",
    "priority",
    "components",
    "labels",
    "status",
    "resolution",
    "resolutiondate",
    "reporter",
    "project",
    "issuetype",
)
_COMMENT_PAGE = 50
_MAX_COMMENT_PAGES = 10  # the first agent reply is near the start; 500 comments in, stop looking
_PROJECT_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,254}$")
_ORDER_BY = re.compile(r"\border\s+by\b", re.I)


def jira_plan(*, query: str | None, since: date | None, projects: list[str]) -> dict[str, Any]:
    """The JQL (without ORDER BY): the condition, the time window and the projects."""
    condition = (query or DEFAULT_CONDITION).strip()
    if _ORDER_BY.search(condition):
        raise HistoryError("--query takes a JQL condition without ORDER BY (the import orders by resolution date)")
    bad = [p for p in projects if not _PROJECT_KEY.match(p)]
    if bad:
        raise HistoryError(f"--project {bad[0]!r} is not a Jira project key")
    window = f'resolved >= "{since:%Y-%m-%d}"' if since else DEFAULT_WINDOW
    parts = [f"({condition})", window]
    if projects:
        parts.append("project in (" + ", ".join(f'"{p.upper()}"' for p in projects) + ")")
    return {"jql": " AND ".join(parts)}


def jira_caller(settings: JiraSettings, *, transport: httpx.BaseTransport | None = None) -> HttpCaller:
    """An HTTP client for the configured site (the write-back's credentials)."""
    if not settings.base_url or not settings.email or settings.api_token is None:
        raise HistoryError("importing from Jira needs ITSM_JIRA__BASE_URL, ITSM_JIRA__EMAIL and ITSM_JIRA__API_TOKEN")
    return HttpCaller(
        system="jira",
        base_url=settings.base_url,
        auth=(settings.email, settings.api_token.get_secret_value()),
        timeout_s=max(settings.timeout_s, 30.0),  # a page of 100 issues takes longer than a write-back
        error_message=jira_error_message,
        transport=transport,
    )


def _since_bound(jql: str, after: str) -> str:
    """The plan's JQL limited to issues resolved from a day before `after` (JQL dates are in the user's zone)."""
    when = parse_time(after)
    if when is None:
        return jql
    return f'{jql} AND resolved >= "{(when - timedelta(days=1)):%Y-%m-%d %H:%M}"'


class JiraHistory:
    """HistorySource for Jira Cloud / JSM."""

    name = "jira"

    def __init__(
        self,
        http: RetryingReader,
        plan: dict[str, Any],
        *,
        labels: dict[str, str],
        settings: JiraSettings,
        page_size: int = 100,
        concurrency: int = 4,
        skip_authors: tuple[str, ...] = (),
    ) -> None:
        self.http = http
        self.plan = plan
        self.labels = labels
        self.settings = settings
        self.page_size = page_size
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="jira-comments")
        self._priority = inverse(settings.priority_map)
        self._category = inverse(settings.category_map)
        self._own: set[str] = set()
        self._skip_authors = {a.strip().lower() for a in skip_authors if a.strip()}
        self._account_types: dict[str, str] = {}  # accountId -> atlassian | app | customer (JSM omits it)
        self._request_type_field: str | None = None
        self._platform_projects: set[str] = set()  # projects whose issues are not JSM requests
        self._prepared = False

    def close(self) -> None:
        """Stop the comment threads and release connections."""
        self._pool.shutdown(wait=True)
        self.http.close()

    # -- setup --

    def _prepare(self) -> None:
        """The service's own account id (its comments are never replies) and the site's request-type field."""
        if self._prepared:
            return
        own = self.settings.account_id
        if not own:
            me = json_body(self.http.request("GET", "/rest/api/3/myself"))
            own = str(me.get("accountId") or "") if isinstance(me, dict) else ""
        if own:
            self._own.add(own)
        fields = json_body(self.http.request("GET", "/rest/api/3/field"))
        for f in fields if isinstance(fields, list) else []:
            schema = f.get("schema") if isinstance(f, dict) else None
            if isinstance(schema, dict) and schema.get("custom") == REQUEST_TYPE_SCHEMA:
                self._request_type_field = str(f.get("id"))
                break
        if REQUEST_TYPE in self.labels.values() and self._request_type_field is None:
            raise HistoryError("--label …=request_type: this site has no JSM request type field")
        self._prepared = True

    def _fields(self) -> list[str]:
        """Fields the search returns: what the import reads plus every label's field."""
        wanted = list(BASE_FIELDS)
        if self._request_type_field:
            wanted.append(self._request_type_field)
        for source_field in self.labels.values():
            if source_field != REQUEST_TYPE and source_field not in wanted:
                wanted.append(source_field)
        return wanted

    # -- HistorySource --

    def total(self) -> int | None:
        """Jira's approximate count of matching issues; None when the site does not offer it."""
        try:
            data = json_body(self.http.request("POST", COUNT, json={"jql": self.plan["jql"]}))
        except PermanentUpstream as exc:
            if exc.status == 400:
                raise HistoryError(f"Jira rejected the query: {exc}") from None
            return None
        count = data.get("count") if isinstance(data, dict) else None
        return int(count) if isinstance(count, int) else None

    def pages(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        """Search pages from `cursor` ({token, after}); an expired token restarts from the last resolution date."""
        self._prepare()
        token: str | None = (cursor or {}).get("token")
        after: str | None = (cursor or {}).get("after")
        jql = self.plan["jql"] if token or not after else _since_bound(self.plan["jql"], after)
        bounded = jql != self.plan["jql"]
        while True:
            body: dict[str, Any] = {"jql": jql + ORDER, "fields": self._fields(), "maxResults": self.page_size}
            if token:
                body["nextPageToken"] = token
            try:
                data = json_body(self.http.request("POST", SEARCH, json=body))
            except PermanentUpstream as exc:
                if token and exc.status == 400 and after:
                    # Page tokens expire (7 days): search again from the last resolution date; seen ids are skipped.
                    log.debug("history_page_token_expired", after=after)
                    token, jql, bounded = None, _since_bound(self.plan["jql"], after), True
                    continue
                if exc.status == 400:
                    raise HistoryError(f"Jira rejected the query: {exc}") from None
                raise
            if not isinstance(data, dict) or not isinstance(data.get("issues"), list):
                raise HistoryError("Jira's search answered without an issues list")
            issues = [i for i in data["issues"] if isinstance(i, dict)]
            if bounded and after:
                # A restarted search re-reads up to a day already done: those issues were counted before.
                floor = parse_time(after)
                issues = [i for i in issues if not floor or (parse_time(_resolved(i)) or floor) >= floor]
            tickets = list(self._pool.map(self._ticket, issues))
            next_token = data.get("nextPageToken") if isinstance(data.get("nextPageToken"), str) else None
            last = data.get("isLast") is True or not next_token
            new_after = max([after or "", *(t.resolved_at for t in tickets)]) or None
            yield Page(
                tickets,
                {"token": token, "after": after},
                {"token": None if last else next_token, "after": new_after},
                done=last,
            )
            if last:
                return
            token, after = next_token, new_after

    # -- one issue --

    def _ticket(self, issue: dict[str, Any]) -> HistoryTicket:
        """An issue's text, labels and first agent reply."""
        raw = issue.get("fields")
        fields: dict[str, Any] = raw if isinstance(raw, dict) else {}
        key = str(issue.get("key") or issue.get("id") or "")
        resolved = parse_time(fields.get("resolutiondate"))
        ticket = HistoryTicket(
            key=key,
            subject=str(fields.get("summary") or ""),
            body=to_text(fields.get("description")),
            labels={name: v for name, f in self.labels.items() if (v := self._label(f, fields)) is not None},
            resolved_at=resolved.astimezone(UTC).isoformat(timespec="milliseconds") if resolved else "",
        )
        resolution = (first_value(fields.get("resolution")) or "").lower()
        if resolution.startswith("duplicate"):
            return replace(ticket, skip="closed_as_duplicate")
        reporter_obj = fields.get("reporter")
        reporter = reporter_obj.get("accountId") if isinstance(reporter_obj, dict) else None
        project = first_value(fields.get("project")) or key.split("-", 1)[0]
        found = self._reply(key, reporter=reporter, project=project)
        return replace(ticket, reply=found[0], reply_author=found[1]) if found else ticket

    def _label(self, source_field: str, fields: dict[str, Any]) -> str | None:
        """One label value, mapped back through the write-back maps so the model learns labels it can write."""
        if source_field == "priority":
            name = first_value(fields.get("priority"))
            return self._priority.get(name.lower(), name) if name else None
        if source_field == REQUEST_TYPE:
            value = fields.get(self._request_type_field or "")
            rt = value.get("requestType") if isinstance(value, dict) else None
            return first_value(rt.get("name")) if isinstance(rt, dict) else None
        if source_field == "labels":
            value = first_value([x for x in fields.get("labels") or [] if x != TRIAGED_LABEL])
        else:
            value = first_value(fields.get(source_field))
        if value is not None and source_field == self.settings.category_field:
            return self._category.get(value.lower(), value)
        return value

    def _reply(self, key: str, *, reporter: str | None, project: str) -> tuple[str, str] | None:
        """The first public comment written by someone other than the reporter and the service."""
        jsm = project not in self._platform_projects
        if jsm:
            try:
                return self._jsm_reply(key, reporter)
            except PermanentUpstream as exc:
                if exc.status != 404:
                    raise
        try:
            found = self._platform_reply(key, reporter)
        except PermanentUpstream as exc:
            if exc.status == 404:
                return None  # deleted since the search found it
            raise
        if jsm:
            self._platform_projects.add(project)  # not a service project: its comments are platform ones
        return found

    def _agent_reply(self, author: Any, text: str, reporter: str | None) -> tuple[str, str] | None:
        """(text, author name) unless written by the reporter, the service (account or marker), an app or
        customer account, or an account named in --skip-author; None for those and for empty comments."""
        author = author if isinstance(author, dict) else {}
        account = str(author.get("accountId") or "")
        name = str(author.get("displayName") or account or "unknown")
        if account and (account == reporter or account in self._own):
            return None
        if (author.get("accountType") or self._account_type(account)) in ("customer", "app"):
            return None
        if self._skip_authors & {account.lower(), name.lower()}:
            return None
        return (text, name) if text.strip() and MARKER_PREFIX not in text else None

    def _account_type(self, account: str) -> str:
        """An account's type, looked up once per author: JSM comments do not say whether an app wrote them."""
        if not account:
            return ""
        known = self._account_types.get(account)
        if known is None:
            try:
                user = json_body(self.http.request("GET", "/rest/api/3/user", params={"accountId": account}))
            except PermanentUpstream:
                user = None  # a deleted user, or no permission to browse users: treat as a person
            known = str(user.get("accountType") or "") if isinstance(user, dict) else ""
            if len(self._account_types) < 10_000:
                self._account_types[account] = known
        return known

    def _jsm_reply(self, key: str, reporter: str | None) -> tuple[str, str] | None:
        path = f"/rest/servicedeskapi/request/{key}/comment"
        for page in range(_MAX_COMMENT_PAGES):
            params: dict[str, str | int] = {
                "public": "true",
                "internal": "false",
                "start": page * _COMMENT_PAGE,
                "limit": _COMMENT_PAGE,
            }
            data = json_body(self.http.request("GET", path, params=params))
            values = data.get("values") if isinstance(data, dict) else None
            comments = [c for c in values if isinstance(c, dict)] if isinstance(values, list) else []
            comments.sort(key=lambda c: (c.get("created") or {}).get("epochMillis") or 0)
            for c in comments:
                if c.get("public") is not True:
                    continue
                found = self._agent_reply(c.get("author"), to_text(c.get("body")), reporter)
                if found:
                    return found
            if not comments or not isinstance(data, dict) or data.get("isLastPage", True):
                return None
        return None

    def _platform_reply(self, key: str, reporter: str | None) -> tuple[str, str] | None:
        path = f"/rest/api/3/issue/{key}/comment"
        for page in range(_MAX_COMMENT_PAGES):
            params: dict[str, str | int] = {
                "startAt": page * _COMMENT_PAGE,
                "maxResults": _COMMENT_PAGE,
                "orderBy": "created",
            }
            data = json_body(self.http.request("GET", path, params=params))
            values = data.get("comments") if isinstance(data, dict) else None
            comments = [c for c in values if isinstance(c, dict)] if isinstance(values, list) else []
            for c in comments:
                if c.get("jsdPublic") is False:
                    continue
                found = self._agent_reply(c.get("author"), to_text(c.get("body")), reporter)
                if found:
                    return found
            total = data.get("total") if isinstance(data, dict) else None
            if not comments or not isinstance(total, int) or (page + 1) * _COMMENT_PAGE >= total:
                return None
        return None


def _resolved(issue: dict[str, Any]) -> Any:
    fields = issue.get("fields")
    return fields.get("resolutiondate") if isinstance(fields, dict) else None
