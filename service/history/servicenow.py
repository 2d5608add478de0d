"""Resolved / closed ServiceNow incidents through the Table API, keyset-paged on `sys_updated_on`.

Keyset, not offset: the query asks for `sys_updated_on >= <last seen>` ordered by (sys_updated_on, sys_id) and
skips, with `sysparm_offset`, the rows at that very second already read. A record updated while the import runs
moves to the end instead of shifting every later page. A page ends the import only when it comes back empty (ACLs
can drop rows from a page without saying so). The first agent reply is the earliest `comments` journal entry
(`sys_journal_field`, one query per page) written by neither the caller, the integration user nor the system.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from service.connectors._http import HttpCaller, json_body
from service.connectors.servicenow import ServiceNowOAuth, servicenow_error_message
from service.domain.errors import PermanentUpstream
from service.domain.policy import priority_from_impact_urgency
from service.domain.render import MARKER_PREFIX
from service.history.records import HistoryError, HistoryTicket, Page, inverse
from service.history.retry import RetryingReader
from service.settings import ServiceNowSettings
from service.webhooks.common import parse_time

TABLE = "/api/now/table/incident"
JOURNAL = "/api/now/table/sys_journal_field"
STATS = "/api/now/stats/incident"
DEFAULT_CONDITION = "stateIN6,7"  # Resolved, Closed
DEFAULT_DAYS = 365
BASE_FIELDS = (
    "sys_id",
    "number",
    "short_description",
    "description",
    "sys_updated_on",
    "resolved_at",
    "close_code",
    "impact",
    "urgency",
    "priority",
    "caller_id.user_name",
)
SYSTEM_AUTHORS = frozenset({"system", "guest"})  # automatic entries ("closed after 7 days") and unknown e-mail
_JOURNAL_PAGE = 1000
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_HTML_TAG = re.compile(r"<[^>]{0,200}>")
_CODE = re.compile(r"^\s*\[code\](.*)\[/code\]\s*$", re.S)


def servicenow_plan(*, query: str | None, since: date | None, now: datetime | None = None) -> dict[str, Any]:
    """The encoded query condition and the window's start (UTC, ServiceNow's `YYYY-MM-DD HH:MM:SS`)."""
    condition = (query or DEFAULT_CONDITION).strip().strip("^")
    if "ORDERBY" in condition.upper():
        raise HistoryError("--query takes an encoded query without ORDERBY (the import orders by sys_updated_on)")
    if "^NQ" in condition.upper():
        raise HistoryError("--query: ^NQ is not supported (use ^OR within one query)")
    start = (
        datetime(since.year, since.month, since.day, tzinfo=UTC)
        if since
        else (now or datetime.now(UTC)) - timedelta(days=DEFAULT_DAYS)
    )
    return {"query": condition, "since": start.strftime("%Y-%m-%d %H:%M:%S")}


def servicenow_caller(settings: ServiceNowSettings, *, transport: httpx.BaseTransport | None = None) -> HttpCaller:
    """An HTTP client for the configured instance (basic auth, or OAuth when a client id is set)."""
    if not settings.instance_url or not settings.username or settings.password is None:
        raise HistoryError("importing from ServiceNow needs ITSM_SERVICENOW__INSTANCE_URL, __USERNAME and __PASSWORD")
    password = settings.password.get_secret_value()
    auth: httpx.Auth | tuple[str, str] = (settings.username, password)
    if settings.oauth_client_id:
        auth = ServiceNowOAuth(
            token_url=settings.instance_url.rstrip("/") + "/oauth_token.do",
            client_id=settings.oauth_client_id,
            client_secret=settings.oauth_client_secret.get_secret_value() if settings.oauth_client_secret else "",
            username=settings.username,
            password=password,
        )
    return HttpCaller(
        system="servicenow",
        base_url=settings.instance_url,
        auth=auth,
        timeout_s=max(settings.timeout_s, 30.0),
        error_message=servicenow_error_message,
        transport=transport,
    )


def _pair(row: dict[str, Any], name: str) -> tuple[str, str]:
    """(value, display_value) of a field read with sysparm_display_value=all (plain strings tolerated)."""
    cell = row.get(name)
    if isinstance(cell, dict):
        value, display = cell.get("value"), cell.get("display_value")
        return (str(value) if value is not None else "", str(display) if display is not None else "")
    text = "" if cell is None else str(cell)
    return text, text


def journal_text(value: str) -> str:
    """A journal entry as plain text ([code]<html>[/code] entries lose their tags)."""
    code = _CODE.match(value)
    return _HTML_TAG.sub("", code.group(1)).strip() if code else value.strip()


class ServiceNowHistory:
    """HistorySource for ServiceNow incidents."""

    name = "servicenow"

    def __init__(
        self,
        http: RetryingReader,
        plan: dict[str, Any],
        *,
        labels: dict[str, str],
        settings: ServiceNowSettings,
        page_size: int = 100,
        skip_authors: tuple[str, ...] = (),
    ) -> None:
        self.http = http
        self.plan = plan
        self.labels = labels
        self.settings = settings
        # sys_ids of a page travel in one journal query's URL: 200 of them keep it under 8 KB.
        self.page_size = min(page_size, 200)
        self._pairs = {tuple(pair): label for label, pair in settings.priority_map.items()}
        self._category = inverse(settings.category_map)
        self._groups = inverse(settings.assignment_group_map)
        self._own = {u.lower() for u in (settings.integration_user, settings.username, *skip_authors) if u}

    def close(self) -> None:
        """Release connections."""
        self.http.close()

    def _fields(self) -> str:
        wanted = list(BASE_FIELDS)
        wanted += [f for f in self.labels.values() if f not in wanted]
        return ",".join(wanted)

    def total(self) -> int | None:
        """The Aggregate API's count of matching incidents; None when the user may not call it."""
        params = {
            "sysparm_count": "true",
            "sysparm_query": f"{self.plan['query']}^sys_updated_on>={self.plan['since']}",
        }
        try:
            data = json_body(self.http.request("GET", STATS, params=params))
        except PermanentUpstream:
            return None
        stats = (data.get("result") or {}).get("stats") if isinstance(data, dict) else None
        count = stats.get("count") if isinstance(stats, dict) else None
        return int(count) if isinstance(count, str | int) and str(count).isdigit() else None

    def pages(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        """Pages from `cursor` ({after, tied}) until a page comes back empty."""
        after = str((cursor or {}).get("after") or self.plan["since"])
        tied = int((cursor or {}).get("tied") or 0)
        while True:
            params: dict[str, str | int] = {
                "sysparm_query": f"{self.plan['query']}^sys_updated_on>={after}^ORDERBYsys_updated_on^ORDERBYsys_id",
                "sysparm_fields": self._fields(),
                "sysparm_display_value": "all",
                "sysparm_exclude_reference_link": "true",
                "sysparm_no_count": "true",
                "sysparm_limit": self.page_size,
                "sysparm_offset": tied,
            }
            try:
                data = json_body(self.http.request("GET", TABLE, params=params))
            except PermanentUpstream as exc:
                if exc.status == 400:
                    raise HistoryError(f"ServiceNow rejected the query: {exc}") from None
                raise
            rows = data.get("result") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise HistoryError("ServiceNow's table API answered without a result list")
            rows = [r for r in rows if isinstance(r, dict)]
            this = {"after": after, "tied": tied}
            if not rows:
                yield Page([], this, this, done=True)
                return
            replies = self._replies(rows)
            tickets = [self._ticket(r, replies) for r in rows]
            last = _pair(rows[-1], "sys_updated_on")[0]
            at_last = sum(1 for r in rows if _pair(r, "sys_updated_on")[0] == last)
            tied = tied + at_last if last == after else at_last
            after = last
            yield Page(tickets, this, {"after": after, "tied": tied}, done=False)

    def _ticket(self, row: dict[str, Any], replies: dict[str, tuple[str, str]]) -> HistoryTicket:
        sys_id = _pair(row, "sys_id")[0]
        resolved = parse_time(_pair(row, "resolved_at")[0] or _pair(row, "sys_updated_on")[0])
        close_code = _pair(row, "close_code")[0].lower()
        return HistoryTicket(
            key=_pair(row, "number")[0] or sys_id,
            subject=_pair(row, "short_description")[0],
            body=_pair(row, "description")[0],
            labels={name: v for name, f in self.labels.items() if (v := self._label(f, row))},
            reply=replies[sys_id][0] if sys_id in replies else None,
            reply_author=replies[sys_id][1] if sys_id in replies else None,
            resolved_at=resolved.isoformat(timespec="milliseconds") if resolved else "",
            skip="closed_as_duplicate" if "duplicate" in close_code else None,
        )

    def _label(self, source_field: str, row: dict[str, Any]) -> str | None:
        """One label value, mapped back through the write-back maps (priority from impact x urgency)."""
        value, display = _pair(row, source_field)
        if source_field == "priority":
            impact, urgency = _pair(row, "impact")[0], _pair(row, "urgency")[0]
            label = self._pairs.get((impact, urgency)) or priority_from_impact_urgency(impact, urgency)
            return label or (f"P{value}" if value.isdigit() else value or None)
        if source_field == "category":
            return self._category.get(value.lower(), value) if value else None
        if source_field == "assignment_group":
            return self._groups.get(value.lower(), display or value) if value else None
        # A reference's value is a sys_id; its display value is the name a person knows.
        return (display if _SYS_ID.match(value) and display else value) or None

    def _replies(self, rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """sys_id -> (text, user name) of the earliest `comments` entry by neither the caller, the service, the
        system nor a --skip-author user."""
        callers = {_pair(r, "sys_id")[0]: _pair(r, "caller_id.user_name")[0].lower() for r in rows}
        ids = [i for i in callers if i]
        found: dict[str, tuple[str, str]] = {}
        offset = 0
        while ids:
            params: dict[str, str | int] = {
                "sysparm_query": f"element_idIN{','.join(ids)}^element=comments^ORDERBYsys_created_on",
                "sysparm_fields": "element_id,sys_created_by,sys_created_on,value",
                "sysparm_no_count": "true",
                "sysparm_limit": _JOURNAL_PAGE,
                "sysparm_offset": offset,
            }
            try:
                data = json_body(self.http.request("GET", JOURNAL, params=params))
            except PermanentUpstream as exc:
                if exc.status in (401, 403):
                    raise HistoryError(
                        f"{exc}: the integration user needs read access to sys_journal_field for the replies"
                    ) from None
                raise
            entries = data.get("result") if isinstance(data, dict) else None
            entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
            for e in entries:
                element_id = _pair(e, "element_id")[0]
                author = _pair(e, "sys_created_by")[0].lower()
                if element_id in found or author in self._own or author in SYSTEM_AUTHORS:
                    continue
                if author and author == callers.get(element_id):
                    continue
                text = journal_text(_pair(e, "value")[0])
                if text and MARKER_PREFIX not in text:
                    found[element_id] = (text, author)
            if len(entries) < _JOURNAL_PAGE:
                return found
            offset += len(entries)
        return found
